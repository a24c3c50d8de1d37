//! Unit tests of `virtio`, one file per subject.

mod worker_seccomp;
