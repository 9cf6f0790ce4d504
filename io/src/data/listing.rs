//! Which files make up a dataset, and their labels.
//!
//! Four layouts are recognised; [`Layout::detect`] tells them apart and
//! `--layout` overrides it:
//!
//! * **CSV manifest** ([`Layout::CsvManifest`]): `ROOT/labels.csv` with a
//!   `file,label` header; `file` is relative to `ROOT`, `label` an integer
//!   (an empty label means "unlabelled"). Class names come from
//!   `ROOT/classes.txt` (one per line) when it exists.
//! * **ImageFolder** ([`Layout::ImageFolder`]): `ROOT/<wnid>/…/<image>`, the
//!   torchvision layout. The class index is the wnid's position in a synset
//!   list — by default the built-in ImageNet-1k list (the standard sorted-wnid
//!   order), so a folder holding a *subset* of the classes still gets the
//!   indices the model was trained with, which a torchvision-style
//!   "index = position among the folders present" would get wrong.
//! * **WebDataset** and **Parquet** shards ([`Layout::WebDataset`],
//!   [`Layout::Parquet`]): `*.tar` or `*.parquet` files anywhere under `ROOT`;
//!   see [`super::containers`] for what they hold. Listing reads tar headers
//!   and labels, and Parquet footers and label columns, never image bytes.
//!
//! Entries are sorted by `image_id` (byte order) whatever the directory
//! iteration order or manifest order, so runs are reproducible across file
//! systems and batch `i` always holds the same images.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::DataError;
use super::containers::{self, ContainerKind, ParquetIndex};
use super::preprocess::Preprocess;

/// The built-in synset list: `shared/data/LOC_synset_mapping.txt`, 1000 lines
/// `<wnid> <name>` in ImageNet-1k class-index order.
const IMAGENET_SYNSETS: &str = include_str!("LOC_synset_mapping.txt");

/// File name extensions (lower-cased) taken as images in an ImageFolder tree.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How deep an ImageFolder class folder may nest; a guard against symlink
/// loops, far beyond any real layout.
const MAX_DEPTH: usize = 16;

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the dataset root with `/` separators, e.g.
    /// `n01440764/n01440764_tench.JPEG`; stable across platforms, so usable
    /// as a key in prediction files.
    pub image_id: String,
    /// Full path of the file (root joined with `image_id`), or of the container
    /// holding the image.
    pub path: PathBuf,
    /// Class index, `None` for an unlabelled manifest row.
    pub label: Option<i32>,
    /// Where in `path` the image is.
    pub source: Source,
}

/// Where an entry's image bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The whole file.
    File,
    /// A byte range of a tar shard; `Err` says why the sample has no image.
    TarMember(Result<Range<u64>, String>),
    /// A row of a Parquet shard: the shard's index in [`Dataset::parquet`], the row group
    /// and the row within it.
    ParquetRow {
        shard: usize,
        group: usize,
        row: usize,
    },
}

/// How a dataset folder is organised; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    ImageFolder,
    CsvManifest,
    WebDataset,
    Parquet,
}

impl Layout {
    /// Names as `--layout` takes them.
    pub const NAMES: [&str; 4] = ["imagefolder", "csv", "webdataset", "parquet"];

    /// Parses a `--layout` value.
    pub fn parse(name: &str) -> Result<Layout, DataError> {
        match name.to_ascii_lowercase().as_str() {
            "imagefolder" | "image-folder" | "folder" => Ok(Layout::ImageFolder),
            "csv" | "manifest" => Ok(Layout::CsvManifest),
            "webdataset" | "wds" | "tar" => Ok(Layout::WebDataset),
            "parquet" => Ok(Layout::Parquet),
            _ => Err(DataError::config(
                "--layout",
                format!(
                    "unknown layout {name:?} (one of {})",
                    Layout::NAMES.join(", ")
                ),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::ImageFolder => "imagefolder",
            Layout::CsvManifest => "csv",
            Layout::WebDataset => "webdataset",
            Layout::Parquet => "parquet",
        }
    }

    /// The layout of a dataset whose files (paths relative to its root) are `files`:
    /// `labels.csv` at the root makes a manifest; otherwise tar files make WebDataset and
    /// Parquet files make Parquet shards, unless there are loose images too; otherwise
    /// ImageFolder. Both tar and Parquet files (and no images) is ambiguous: `None`.
    pub fn detect<'a>(files: impl IntoIterator<Item = &'a str>) -> Option<Layout> {
        let (mut tar, mut parquet, mut images) = (false, false, false);
        for f in files {
            if f == "labels.csv" {
                return Some(Layout::CsvManifest);
            }
            match ContainerKind::of(f) {
                Some(ContainerKind::Tar) => tar = true,
                Some(ContainerKind::Parquet) => parquet = true,
                None => images |= is_image(f),
            }
        }
        match (tar, parquet, images) {
            (true, true, false) => None,
            (true, false, false) => Some(Layout::WebDataset),
            (false, true, false) => Some(Layout::Parquet),
            _ => Some(Layout::ImageFolder),
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = DataError;

    fn from_str(name: &str) -> Result<Layout, DataError> {
        Layout::parse(name)
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A listed dataset: every image with its label, in deterministic order.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    /// Sorted by `image_id` (byte order).
    pub entries: Vec<Entry>,
    /// Class names by index. ImageFolder: the names of the synset list (all
    /// of them, not only the folders present). CSV: the lines of
    /// `classes.txt`, or empty when there is none.
    pub classes: Vec<String>,
    pub layout: Layout,
    /// Parquet shards' paths and indexes ([`Source::ParquetRow`] points here).
    pub parquet: Vec<(PathBuf, Arc<ParquetIndex>)>,
    /// Recently read Parquet row groups: `(shard, group)` and their images.
    group_cache: Arc<Mutex<Vec<GroupImages>>>,
}

/// The images of one Parquet row group, keyed by shard and group.
type GroupImages = ((usize, usize), Arc<Vec<Option<Bytes>>>);

/// Row groups kept decoded: enough for the threads of one batch to share them.
const GROUP_CACHE: usize = 4;

/// An ordered list of synsets (`<wnid> <name>` per line) giving each wnid its
/// class index.
#[derive(Clone, Debug)]
pub struct SynsetList {
    /// Wnids in class-index order.
    pub wnids: Vec<String>,
    /// Human-readable names, same order (the wnid itself when a line has no
    /// name).
    pub names: Vec<String>,
    /// Where the list came from, for error messages.
    pub source: String,
    index: HashMap<String, usize>,
}

impl SynsetList {
    /// The built-in ImageNet-1k list (1000 synsets, sorted wnid order).
    pub fn imagenet() -> SynsetList {
        // The embedded file is checked by a unit test, so this cannot fail.
        Self::parse(IMAGENET_SYNSETS, Path::new("<built-in ImageNet-1k list>"))
            .unwrap_or_else(|e| panic!("built-in synset list is malformed: {e}"))
    }

    /// Reads a synset file (`<wnid> <name>` lines; blank lines ignored).
    pub fn from_file(path: &Path) -> Result<SynsetList, DataError> {
        let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses synset text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<SynsetList, DataError> {
        let mut list = SynsetList {
            wnids: Vec::new(),
            names: Vec::new(),
            source: origin.display().to_string(),
            index: HashMap::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (wnid, name) = match line.split_once(char::is_whitespace) {
                Some((w, n)) => (w, n.trim()),
                None => (line, line),
            };
            if list
                .index
                .insert(wnid.to_string(), list.wnids.len())
                .is_some()
            {
                return Err(DataError::ClassList {
                    path: origin.to_path_buf(),
                    line: i + 1,
                    msg: format!("duplicate wnid {wnid:?}"),
                });
            }
            list.wnids.push(wnid.to_string());
            list.names.push(name.to_string());
        }
        if list.wnids.is_empty() {
            return Err(DataError::ClassList {
                path: origin.to_path_buf(),
                line: 0,
                msg: "no synsets".into(),
            });
        }
        Ok(list)
    }

    /// Class index of `wnid`, if listed.
    pub fn index_of(&self, wnid: &str) -> Option<usize> {
        self.index.get(wnid).copied()
    }

    pub fn len(&self) -> usize {
        self.wnids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wnids.is_empty()
    }
}

impl Dataset {
    /// Lists the dataset at `root`, auto-detecting the layout: `labels.csv`
    /// present → CSV manifest, otherwise ImageFolder labelled through
    /// `synsets` (a `<wnid> <name>` file; default: built-in ImageNet-1k).
    /// `synsets` is ignored for a CSV manifest.
    ///
    /// Errors (each naming the path or manifest line): root missing or not a
    /// folder, no images, a class folder not in the synset list, a manifest
    /// row with a malformed/negative/out-of-range label, naming a missing
    /// file, a path outside the root, or a duplicate.
    pub fn open(root: &Path, synsets: Option<&Path>) -> Result<Dataset, DataError> {
        Self::open_as(root, synsets, None)
    }

    /// [`Dataset::open`] with the layout given instead of detected.
    pub fn open_as(
        root: &Path,
        synsets: Option<&Path>,
        layout: Option<Layout>,
    ) -> Result<Dataset, DataError> {
        let meta = fs::metadata(root).map_err(|e| DataError::io(root, e))?;
        if !meta.is_dir() {
            return Err(DataError::NotADirectory(root.to_path_buf()));
        }
        let manifest = root.join("labels.csv");
        let layout = match layout {
            Some(l) => l,
            None => detect_layout(root)?,
        };
        let ds = match layout {
            Layout::CsvManifest => open_manifest(root, &manifest)?,
            Layout::ImageFolder => {
                let list = match synsets {
                    Some(p) => SynsetList::from_file(p)?,
                    None => SynsetList::imagenet(),
                };
                open_image_folder(root, &list)?
            }
            Layout::WebDataset => open_tar_shards(root)?,
            Layout::Parquet => open_parquet_shards(root)?,
        };
        if ds.entries.is_empty() {
            return Err(DataError::NoImages(root.to_path_buf()));
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bytes of an entry's image file.
    pub fn read(&self, entry: &Entry) -> Result<Bytes, DataError> {
        let path = &entry.path;
        match &entry.source {
            Source::File => fs::read(path)
                .map(Bytes::from)
                .map_err(|e| DataError::io(path, e)),
            Source::TarMember(Err(msg)) => Err(DataError::Decode {
                name: entry.image_id.clone(),
                msg: msg.clone(),
            }),
            Source::TarMember(Ok(range)) => {
                use std::io::{Read, Seek, SeekFrom};
                let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
                file.seek(SeekFrom::Start(range.start))
                    .map_err(|e| DataError::io(path, e))?;
                let mut buf = Vec::new();
                file.take(range.end - range.start)
                    .read_to_end(&mut buf)
                    .map_err(|e| DataError::io(path, e))?;
                if buf.len() as u64 != range.end - range.start {
                    return Err(DataError::Decode {
                        name: entry.image_id.clone(),
                        msg: "tar member is truncated".into(),
                    });
                }
                Ok(Bytes::from(buf))
            }
            &Source::ParquetRow { shard, group, row } => {
                let images = self.row_group(shard, group)?;
                images
                    .get(row)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| DataError::Decode {
                        name: entry.image_id.clone(),
                        msg: "no image in this row".into(),
                    })
            }
        }
    }

    /// Reads and preprocesses an entry's image (see [`Preprocess::load_u8`]).
    pub fn load_u8(&self, entry: &Entry, pre: &Preprocess) -> Result<Vec<u8>, DataError> {
        match entry.source {
            Source::File => pre.load_u8(&entry.path),
            _ => pre.load_u8_from_bytes(&self.read(entry)?, &entry.image_id),
        }
    }

    /// Reads, preprocesses and normalises an entry's image (see [`Preprocess::load_chw`]).
    pub fn load_chw(&self, entry: &Entry, pre: &Preprocess) -> Result<Vec<f32>, DataError> {
        let hwc = self.load_u8(entry, pre)?;
        let mut out = vec![0f32; pre.chw_len()];
        pre.normalise_into(&hwc, &mut out);
        Ok(out)
    }

    /// The images of a Parquet row group, decoded once and shared by the entries in it.
    fn row_group(&self, shard: usize, group: usize) -> Result<Arc<Vec<Option<Bytes>>>, DataError> {
        let cached = |cache: &Vec<GroupImages>| {
            cache
                .iter()
                .find(|(k, _)| *k == (shard, group))
                .map(|(_, v)| v.clone())
        };
        if let Some(hit) = cached(&self.group_cache.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(hit);
        }
        let (path, index) = self.parquet.get(shard).ok_or_else(|| {
            DataError::config("parquet entry", format!("no shard {shard} in this dataset"))
        })?;
        let name = path.display().to_string();
        let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let images = Arc::new(index.read_group(file, group, &name)?);
        let mut cache = self.group_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cached(&cache).is_none() {
            if cache.len() >= GROUP_CACHE {
                cache.remove(0);
            }
            cache.push(((shard, group), images.clone()));
        }
        Ok(images)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of classes: the class-name count when known, otherwise one
    /// more than the largest label (0 for an unlabelled dataset).
    pub fn num_classes(&self) -> usize {
        if !self.classes.is_empty() {
            return self.classes.len();
        }
        self.entries
            .iter()
            .filter_map(|e| e.label)
            .max()
            .map_or(0, |m| m as usize + 1)
    }
}

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Sorted (byte order) names of the entries of `dir`; non-UTF-8 names are an
/// error because `image_id` must be a string.
fn sorted_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let item = item.map_err(|e| DataError::io(dir, e))?;
        let name = item.file_name().into_string().map_err(|n| {
            DataError::io(
                dir.join(&n),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file name is not UTF-8"),
            )
        })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

fn open_image_folder(root: &Path, synsets: &SynsetList) -> Result<Dataset, DataError> {
    let mut entries = Vec::new();
    for name in sorted_names(root)? {
        let dir = root.join(&name);
        // Follows symlinks, so a linked class folder works.
        if is_hidden(&name) || !dir.is_dir() {
            continue; // loose files at the root (README, …) are not images of a class
        }
        let label = synsets
            .index_of(&name)
            .ok_or_else(|| DataError::UnknownClass {
                dir: dir.clone(),
                wnid: name.clone(),
                synsets: synsets.source.clone(),
            })?;
        collect_images(&dir, &name, label as i32, &mut entries)?;
    }
    entries.sort_by(|a: &Entry, b: &Entry| a.image_id.cmp(&b.image_id));
    Ok(Dataset {
        root: root.to_path_buf(),
        entries,
        classes: synsets.names.clone(),
        layout: Layout::ImageFolder,
        parquet: Vec::new(),
        group_cache: Default::default(),
    })
}

/// Adds every image under `dir` (recursively, like torchvision's ImageFolder)
/// with `label`; `id_prefix` is `dir` relative to the root.
fn collect_images(
    dir: &Path,
    id_prefix: &str,
    label: i32,
    out: &mut Vec<Entry>,
) -> Result<(), DataError> {
    for rel in walk_files(dir)?.into_iter().filter(|f| is_image(f)) {
        out.push(Entry {
            path: dir.join(&rel),
            image_id: format!("{id_prefix}/{rel}"),
            label: Some(label),
            source: Source::File,
        });
    }
    Ok(())
}

fn open_manifest(root: &Path, manifest: &Path) -> Result<Dataset, DataError> {
    let row_err = |line: u64, msg: String| DataError::Manifest {
        path: manifest.to_path_buf(),
        line,
        msg,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(manifest)
        .map_err(|e| row_err(0, e.to_string()))?;
    let headers = rdr
        .headers()
        .map_err(|e| row_err(1, e.to_string()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let file_col = col("file")
        .ok_or_else(|| row_err(1, format!("header has no `file` column: {headers:?}")))?;
    let label_col = col("label");

    let classes = read_classes(&root.join("classes.txt"))?;
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            row_err(line, e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let file = rec.get(file_col).unwrap_or("");
        if file.is_empty() {
            return Err(row_err(line, "empty `file`".into()));
        }
        let image_id = file.replace('\\', "/");
        let rel = Path::new(&image_id);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(row_err(
                line,
                format!("`file` {file:?} must be a relative path inside the dataset root"),
            ));
        }
        let label = match label_col.and_then(|c| rec.get(c)) {
            None | Some("") => None,
            Some(s) => {
                let v: i32 = s
                    .parse()
                    .map_err(|_| row_err(line, format!("bad label {s:?} (expected an integer)")))?;
                if v < 0 {
                    return Err(row_err(line, format!("negative label {v}")));
                }
                if !classes.is_empty() && v as usize >= classes.len() {
                    return Err(row_err(
                        line,
                        format!(
                            "label {v} out of range: classes.txt has {} classes",
                            classes.len()
                        ),
                    ));
                }
                Some(v)
            }
        };
        let path = root.join(rel);
        if !path.is_file() {
            return Err(row_err(line, format!("file {} not found", path.display())));
        }
        if !seen.insert(image_id.clone()) {
            return Err(row_err(line, format!("duplicate file {file:?}")));
        }
        entries.push(Entry {
            image_id,
            path,
            label,
            source: Source::File,
        });
    }
    entries.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    Ok(Dataset {
        root: root.to_path_buf(),
        entries,
        classes,
        layout: Layout::CsvManifest,
        parquet: Vec::new(),
        group_cache: Default::default(),
    })
}

/// The layout of the dataset folder `root` (see [`Layout::detect`]).
pub fn detect_layout(root: &Path) -> Result<Layout, DataError> {
    if root.join("labels.csv").is_file() {
        return Ok(Layout::CsvManifest);
    }
    let files = walk_files(root)?;
    Layout::detect(files.iter().map(String::as_str)).ok_or_else(|| {
        DataError::config(
            root.display().to_string(),
            "holds both .tar and .parquet files: choose one with --layout",
        )
    })
}

/// Every file under `root` (not hidden, following symlinked folders), as sorted paths
/// relative to it with `/` separators.
fn walk_files(root: &Path) -> Result<Vec<String>, DataError> {
    fn walk(
        dir: &Path,
        prefix: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<(), DataError> {
        if depth > MAX_DEPTH {
            return Err(DataError::io(
                dir,
                std::io::Error::other(format!("folders nested deeper than {MAX_DEPTH} levels")),
            ));
        }
        for name in sorted_names(dir)? {
            if is_hidden(&name) {
                continue;
            }
            let path = dir.join(&name);
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if path.is_dir() {
                walk(&path, &rel, depth + 1, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", 0, &mut out)?;
    out.sort();
    Ok(out)
}

/// The container files of `kind` under `root`, as sorted relative paths.
pub fn container_files(root: &Path, kind: ContainerKind) -> Result<Vec<String>, DataError> {
    Ok(walk_files(root)?
        .into_iter()
        .filter(|f| ContainerKind::of(f) == Some(kind))
        .collect())
}

fn open_tar_shards(root: &Path) -> Result<Dataset, DataError> {
    let mut entries = Vec::new();
    for rel in container_files(root, ContainerKind::Tar)? {
        let path = root.join(&rel);
        let file = fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let samples = containers::index_tar(std::io::BufReader::new(file), &rel)?;
        entries.extend(samples.into_iter().map(|s| Entry {
            image_id: containers::sample_id(&rel, &s.key),
            path: path.clone(),
            label: s.label,
            source: Source::TarMember(s.image),
        }));
    }
    entries.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    Ok(Dataset {
        root: root.to_path_buf(),
        entries,
        classes: Vec::new(),
        layout: Layout::WebDataset,
        parquet: Vec::new(),
        group_cache: Default::default(),
    })
}

fn open_parquet_shards(root: &Path) -> Result<Dataset, DataError> {
    let mut entries = Vec::new();
    let mut parquet = Vec::new();
    for rel in container_files(root, ContainerKind::Parquet)? {
        let path = root.join(&rel);
        let file = fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let index = ParquetIndex::open(file, &rel)?;
        let shard = parquet.len();
        for (row, &label) in index.labels.iter().enumerate() {
            let Some((group, in_group)) = index.locate(row) else {
                continue;
            };
            entries.push(Entry {
                image_id: containers::sample_id(&rel, &containers::row_key(row)),
                path: path.clone(),
                label,
                source: Source::ParquetRow {
                    shard,
                    group,
                    row: in_group,
                },
            });
        }
        parquet.push((path, Arc::new(index)));
    }
    entries.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    Ok(Dataset {
        root: root.to_path_buf(),
        entries,
        classes: Vec::new(),
        layout: Layout::Parquet,
        parquet,
        group_cache: Default::default(),
    })
}

/// Reads `classes.txt` (one name per line; trailing blank lines ignored,
/// blank lines in between refused since they would shift every index after
/// them). A missing file gives an empty list.
fn read_classes(path: &Path) -> Result<Vec<String>, DataError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DataError::io(path, e)),
    };
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(DataError::ClassList {
            path: path.to_path_buf(),
            line: i + 1,
            msg: "blank class name".into(),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_synsets_parse() {
        let s = SynsetList::imagenet();
        assert_eq!(s.len(), 1000);
        assert_eq!(s.wnids[0], "n01440764");
        assert_eq!(s.names[0], "tench");
        assert_eq!(s.names[2], "great white shark");
        assert_eq!(s.index_of("n15075141"), Some(999));
        let mut sorted = s.wnids.clone();
        sorted.sort();
        assert_eq!(
            sorted, s.wnids,
            "ImageNet-1k index order is sorted wnid order"
        );
    }

    #[test]
    fn synset_duplicates_are_refused() {
        let e = SynsetList::parse("a x\nb y\na z\n", Path::new("syn.txt")).unwrap_err();
        assert!(e.to_string().contains("syn.txt:3"), "{e}");
    }

    #[test]
    fn image_extensions() {
        assert!(is_image("a.JPEG") && is_image("b.jpg") && is_image("c.Png"));
        assert!(!is_image("labels.csv") && !is_image("jpeg") && !is_image("x.gif"));
    }
}
