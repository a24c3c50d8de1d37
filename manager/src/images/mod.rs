//! Images: the rules and protocols of the image service. Registering an
//! image (a kernel's checked copies at once; a disk image copied in the
//! background: [`create`]), uploading a queued disk image's bytes
//! ([`Upload`]), deleting one with its copies ([`delete`]), and what
//! kilnd's start makes of images a stop interrupted ([`reconcile`]). The
//! files themselves are [`crate::image_files`].
//!
//! # The upload protocol
//!
//! 1. **Begin** ([`Upload::begin`]): only a `queued` disk image takes an
//!    upload, and one no larger than `images.max_upload_bytes`; the store
//!    turns it `importing` (one upload at a time) and the bytes go to
//!    `ID.FORMAT.partial`.
//! 2. **Write** ([`Upload::write`]): hashed on the way, `bytes_done`
//!    recorded every 100 ms, the limit checked against what comes.
//! 3. **Finish** ([`Upload::finish`]): the data checked against the
//!    declared format ([`check_complete`]) and renamed into place, the
//!    image `active`; data that is not what it claims puts the image in
//!    `error` and removes the file.
//!
//! An upload dropped before it finished (client gone, too large, idle)
//! removes its file and puts the image back to `queued`; one a kilnd stop
//! cut short is put in `error` at the next start ([`reconcile`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::compute::{Image, ImageCreate, ImageKind, ImageStatus};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::disks::DiskBackend;
use crate::image_files::import_path::ImportDirs;
use crate::image_files::{check_complete, kernels, prepare_image, ImportError, PARTIAL};
use crate::store::{Store, StoreError};
use crate::util::check_name;

#[derive(Debug, Error)]
pub enum ImageError {
    /// The request breaks a rule (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The image's state says no (a 409).
    #[error("{0}")]
    Conflict(String),
    #[error("the image is larger than the largest upload accepted, {max} bytes (images.max_upload_bytes)")]
    TooLarge { max: u64 },
    #[error(transparent)]
    Import(#[from] ImportError),
    /// kilnd failed (a 500), saying what it was doing.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers an image: its name checked, its files prepared. Answers the
/// image and whether a background copy was started (a disk image imported
/// by path).
pub async fn create(
    store: &Arc<Store>,
    config: &Config,
    req: ImageCreate,
) -> Result<(Image, bool), ImageError> {
    let name = match &req {
        ImageCreate::Kernel { name, .. } | ImageCreate::Disk { name, .. } => name.clone(),
    };
    check_name("image", &name).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let n = name.clone();
    if store.call(move |s| s.image_name_taken(&n)).await? {
        return Err(ImageError::Conflict(format!(
            "an image named {name:?} already exists"
        )));
    }
    let dir = config.state_dir.join("images");
    let dirs = ImportDirs::new(&config.state_dir, &config.images.import_dirs);
    let (img, job) = tokio::task::spawn_blocking(move || prepare_image(&req, &dir, &dirs))
        .await
        .map_err(|e| ImageError::Internal(e.to_string()))??;
    let (record, images_dir) = (img.clone(), config.state_dir.join("images"));
    if let Err(e) = store.call(move |s| s.insert_image(&record)).await {
        // A kernel image's store copies, made by prepare_image.
        kernels::remove(&images_dir, &img.id);
        return Err(e.into());
    }
    let Some(job) = job else {
        return Ok((img, false));
    };
    // A disk image: copy and hash in the background, reporting progress.
    let store = store.clone();
    let id = img.id.clone();
    tokio::task::spawn_blocking(move || {
        let mut last = Instant::now();
        let r = job.run(|done| {
            if last.elapsed() >= Duration::from_millis(100) {
                last = Instant::now();
                let _ = store.set_import_progress(&id, done);
            }
        });
        match r {
            Ok((size, sha)) => {
                tracing::info!(image = id, size, "image imported");
                let _ = store.finish_import(&id, size, &sha);
            }
            Err(e) => {
                let why = match &e {
                    ImportError::Copy(io) => format!("{e}: {io}"),
                    _ => e.to_string(),
                };
                tracing::warn!(image = id, why, "image import failed");
                let _ = store.fail_import(&id, &why);
            }
        }
    });
    Ok((img, true))
}

/// Deletes image `key` (id or name) and its files: a kernel's copies, a
/// disk image's file and the lvm backend's copy of it (the next start
/// reconciles a copy that could not be removed).
pub async fn delete(
    store: &Arc<Store>,
    config: &Config,
    disks: &DiskBackend,
    key: String,
) -> Result<(), ImageError> {
    let img = store.call(move |s| s.delete_image(&key)).await?;
    if let ImageKind::Kernel { .. } = img.kind {
        kernels::remove(&config.state_dir.join("images"), &img.id);
    }
    if let ImageKind::Disk { path, .. } = img.kind {
        let _ = std::fs::remove_file(path);
        let disks = disks.clone();
        let _ = tokio::task::spawn_blocking(move || disks.remove_image(&img.id)).await;
    }
    Ok(())
}

/// At kilnd's start, before any request: imports and uploads a stop cut
/// short go to `error` and their files are removed; every disk image in
/// the store must be self-contained and in the store, every kernel image
/// have its checked store copies (made now for one registered by an older
/// kilnd); one that does not (planted, or from an older kilnd) goes to
/// `error` and no server is built on it.
pub fn reconcile(store: &Store, config: &Config) -> Result<(), StoreError> {
    for img in store.importing_images()? {
        tracing::warn!(image = img.id, "import interrupted by a kilnd restart");
        if let ImageKind::Disk { path, .. } = &img.kind {
            let _ = std::fs::remove_file(path);
        }
        store.fail_import(&img.id, "import interrupted: kilnd stopped before it ended")?;
    }
    let store_dir = config.state_dir.join("images");
    // Files of uploads that were cut short by the stop (their images are
    // in error or queued now).
    for p in crate::image_files::remove_partials(&store_dir) {
        tracing::warn!(file = %p.display(), "removed the file of an interrupted upload");
    }
    let dirs = ImportDirs::new(&config.state_dir, &config.images.import_dirs);
    for img in store.list_images()? {
        if img.status != ImageStatus::Active {
            continue;
        }
        let checked = match img.kind {
            ImageKind::Kernel { .. } => kernels::adopt(&img, &dirs, &store_dir),
            ImageKind::Disk { .. } => crate::image_files::check_stored_image(&img, &store_dir),
        };
        if let Err(why) = checked {
            tracing::warn!(image = img.id, why, "image refused at start");
            store.fail_import(&img.id, &why)?;
        }
    }
    Ok(())
}

/// An upload under way (see the module doc). Dropped before
/// [`Upload::finish`], it removes its file and queues the image again.
pub struct Upload {
    store: Arc<Store>,
    id: String,
    path: String,
    format: kiln_api::compute::ImageFormat,
    partial: PathBuf,
    file: Option<tokio::fs::File>,
    hash: Sha256,
    done: u64,
    max: u64,
    last: Instant,
    armed: bool,
}

impl Upload {
    /// Step 1: image `key` takes an upload of `declared` bytes (if the
    /// client said).
    pub async fn begin(
        store: &Arc<Store>,
        config: &Config,
        key: String,
        declared: Option<u64>,
    ) -> Result<Upload, ImageError> {
        let img = store.call(move |s| s.get_image(&key)).await?;
        let ImageKind::Disk { path, format, .. } = img.kind.clone() else {
            return Err(ImageError::Conflict(format!(
                "image {:?} is a kernel image: nothing to upload",
                img.name
            )));
        };
        let conflict = |what: &str| {
            ImageError::Conflict(format!(
                "image {:?} is {what}: only a queued image (created with source: upload) takes an upload",
                img.name
            ))
        };
        match img.status {
            ImageStatus::Queued => {}
            ImageStatus::Active => return Err(conflict("active")),
            ImageStatus::Importing => return Err(conflict("importing")),
            ImageStatus::Error => return Err(conflict("in error (delete it and create it again)")),
        }
        let max = config.images.max_upload_bytes;
        if declared.is_some_and(|n| n > max) {
            return Err(ImageError::TooLarge { max });
        }
        let id = img.id.clone();
        if !store
            .call(move |s| s.start_upload(&id, declared.unwrap_or(0)))
            .await?
        {
            return Err(conflict("no longer queued"));
        }
        let partial = PathBuf::from(format!("{path}{PARTIAL}"));
        let mut upload = Upload {
            store: store.clone(),
            id: img.id,
            path,
            format,
            partial,
            file: None,
            hash: Sha256::new(),
            done: 0,
            max,
            last: Instant::now(),
            armed: true,
        };
        let file = tokio::fs::File::create(&upload.partial)
            .await
            .map_err(|e| {
                ImageError::Internal(format!("cannot create {}: {e}", upload.partial.display()))
            })?;
        upload.file = Some(file);
        Ok(upload)
    }

    /// The image's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bytes written so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Step 2: the next bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.done += data.len() as u64;
        if self.done > self.max {
            return Err(ImageError::TooLarge { max: self.max });
        }
        self.hash.update(data);
        let file = self.file.as_mut().expect("open until finish");
        file.write_all(data)
            .await
            .map_err(|e| ImageError::Internal(format!("cannot write the upload: {e}")))?;
        if self.last.elapsed() >= Duration::from_millis(100) {
            self.last = Instant::now();
            let (id, done) = (self.id.clone(), self.done);
            let _ = self
                .store
                .call(move |s| s.set_import_progress(&id, done))
                .await;
        }
        Ok(())
    }

    /// Step 3: checks what came and makes the image `active`.
    pub async fn finish(mut self) -> Result<Image, ImageError> {
        let file = self.file.take().expect("open until finish");
        file.sync_all()
            .await
            .map_err(|e| ImageError::Internal(format!("cannot write the upload: {e}")))?;
        drop(file);
        let (check, format) = (self.partial.clone(), self.format);
        let checked = tokio::task::spawn_blocking(move || check_complete(&check, format))
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?;
        self.armed = false;
        let (store, id, done) = (self.store.clone(), self.id.clone(), self.done);
        if let Err(why) = checked {
            let _ = std::fs::remove_file(&self.partial);
            let why = format!("upload refused: {why}");
            let (i, w) = (id.clone(), why.clone());
            store.call(move |s| s.fail_import(&i, &w)).await?;
            tracing::warn!(image = id, why, "upload refused");
            return Err(ImageError::Invalid(why));
        }
        if let Err(e) = std::fs::rename(&self.partial, &self.path) {
            let _ = std::fs::remove_file(&self.partial);
            let why = format!("cannot store the upload: {e}");
            let (i, w) = (id.clone(), why.clone());
            store.call(move |s| s.fail_import(&i, &w)).await?;
            return Err(ImageError::Internal(why));
        }
        let sha: String = std::mem::take(&mut self.hash)
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::info!(image = id, size = done, "image uploaded");
        Ok(store
            .call(move |s| {
                s.finish_import(&id, done, &sha)?;
                s.get_image(&id)
            })
            .await?)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.partial);
            let _ = self.store.requeue_upload(&self.id);
            tracing::warn!(image = self.id, "upload did not end; image queued again");
        }
    }
}
