//! Object-store locations: a local path or a `file://`, `s3://`, `gs://` or `az://` URL,
//! resolved to an [`ObjectStore`] and a prefix inside it.
//!
//! Credentials and endpoints come from the standard environment variables of each store
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`, …; `GOOGLE_SERVICE_ACCOUNT`, …; `AZURE_STORAGE_ACCOUNT_NAME`, …), as
//! the `object_store` builders' `from_env` read them.
//!
//! ```
//! use amos_io::store::Location;
//!
//! let dir = std::env::temp_dir();
//! let loc = Location::parse(dir.to_str().unwrap()).unwrap();
//! assert_eq!(loc.child("a/b.png").as_ref(), "a/b.png");
//! ```

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

/// Why a location could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL or path is malformed or names an unsupported scheme.
    #[error("{url}: {msg}")]
    Url { url: String, msg: String },
    /// The store refused or failed an operation.
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// A prefix in an object store.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store ("" for its root).
    pub prefix: ObjectPath,
    /// The URL or path it was opened from, for messages.
    pub url: String,
}

/// Outcome of a create-if-absent write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Written,
    /// The object already existed and was left as it was.
    AlreadyPresent,
}

impl Location {
    /// Opens an existing location for reading.
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        Self::open(url, false)
    }

    /// Opens a location for writing; a local directory is created if missing.
    pub fn parse_output(url: &str) -> Result<Location, StoreError> {
        Self::open(url, true)
    }

    fn open(url: &str, create: bool) -> Result<Location, StoreError> {
        let bad = |msg: String| StoreError::Url {
            url: url.to_string(),
            msg,
        };
        if url.is_empty() {
            return Err(bad("empty location".into()));
        }
        let Some((scheme, _)) = url.split_once("://") else {
            return Self::local(url, std::path::Path::new(url), create);
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|_| bad("not a local file URL".into()))?;
                return Self::local(url, &path, create);
            }
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(url);
                // Create-if-absent commits need conditional puts (If-None-Match, which S3
                // and most S3-compatible stores support); AWS_CONDITIONAL_PUT overrides.
                if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
                    b = b.with_conditional_put(S3ConditionalPut::ETagMatch);
                }
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
            }
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme '{other}' (use a local path, file://, s3://, gs:// or az://)"
                )));
            }
        };
        Ok(Location {
            store,
            prefix,
            url: url.to_string(),
        })
    }

    fn local(url: &str, path: &std::path::Path, create: bool) -> Result<Location, StoreError> {
        let io = |e: std::io::Error| StoreError::Url {
            url: url.to_string(),
            msg: e.to_string(),
        };
        if create {
            std::fs::create_dir_all(path).map_err(io)?;
        }
        let path = std::fs::canonicalize(path).map_err(io)?;
        if !path.is_dir() {
            return Err(StoreError::Url {
                url: url.to_string(),
                msg: "not a directory".into(),
            });
        }
        let store = LocalFileSystem::new_with_prefix(&path)
            .map_err(|source| StoreError::Store {
                url: url.to_string(),
                source,
            })?
            .with_automatic_cleanup(true);
        Ok(Location {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            url: url.to_string(),
        })
    }

    /// Opens the location of one file: its parent as a [`Location`] and the file's path in it.
    pub fn parse_file(url: &str) -> Result<(Location, ObjectPath), StoreError> {
        let bad = |msg: &str| StoreError::Url {
            url: url.to_string(),
            msg: msg.into(),
        };
        let trimmed = url.trim_end_matches('/');
        let (parent, name) = match trimmed.rsplit_once('/') {
            Some((p, n)) if !p.is_empty() && !p.ends_with(':') && !p.ends_with("://") => {
                (p.to_string(), n)
            }
            Some(("", n)) => ("/".to_string(), n),
            _ if !trimmed.contains("://") => (".".to_string(), trimmed),
            _ => return Err(bad("expected a file, not a bucket")),
        };
        if name.is_empty() {
            return Err(bad("no file name"));
        }
        let loc = Location::parse(&parent)?;
        let path = loc.child(name);
        Ok((loc, path))
    }

    /// The path of `relative` (with `/` separators) under this location.
    pub fn child(&self, relative: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    fn err(&self, source: object_store::Error) -> StoreError {
        StoreError::Store {
            url: self.url.clone(),
            source,
        }
    }

    /// The whole object at `path`.
    pub async fn get(&self, path: &ObjectPath) -> Result<Bytes, StoreError> {
        let r = self.store.get(path).await.map_err(|e| self.err(e))?;
        r.bytes().await.map_err(|e| self.err(e))
    }

    /// One byte range of the object at `path`.
    pub async fn get_range(
        &self,
        path: &ObjectPath,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.store
            .get_range(path, range)
            .await
            .map_err(|e| self.err(e))
    }

    /// Byte ranges of the object at `path` (adjacent ranges are coalesced by the store).
    pub async fn get_ranges(
        &self,
        path: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>, StoreError> {
        self.store
            .get_ranges(path, ranges)
            .await
            .map_err(|e| self.err(e))
    }

    /// Whether an object exists at `path`.
    pub async fn exists(&self, path: &ObjectPath) -> Result<bool, StoreError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes `bytes` at `path` in one atomic put, replacing what was there.
    pub async fn put(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes `bytes` at `path` in one atomic put unless an object is already there (which
    /// is left untouched): a late duplicate never replaces a committed object.
    pub async fn put_if_absent(
        &self,
        path: &ObjectPath,
        bytes: Vec<u8>,
    ) -> Result<Created, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Created::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyPresent),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Every object under `relative` (recursively), sorted by path.
    pub async fn list(&self, relative: &str) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        use futures::TryStreamExt;
        let prefix = self.child(relative);
        let mut all: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// The path of `path` relative to this location's prefix.
    pub fn relative(&self, path: &ObjectPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }
}
