//! PCI root: configuration mechanism 1, ECAM, host bridge.
