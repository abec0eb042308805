//! One segment file of the journal: preallocated, mapped, written through
//! the mapping.
//!
//! Stores into a shared file mapping land in the page cache, which outlives
//! the process: a record copied in before a call returns survives any crash
//! of the process (`kill -9`, abort, OOM kill), though not a power loss
//! without a sync. The file is allocated whole when it is created
//! (`fallocate`), so that a full disk is an error at creation, never a
//! `SIGBUS` on a store into a hole of a sparse file.

use super::format::{self, SEGMENT_HEADER};
use fs4::FileExt;
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Default bytes per segment.
pub(crate) const SEGMENT_BYTES: usize = 8 << 20;

pub(crate) struct Segment {
    pub(crate) number: u64,
    pub(crate) path: PathBuf,
    /// A spare's file name until it is installed.
    spare: bool,
    file: File,
    map: MmapRaw,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

/// The file name of the spare segment (see [`Segment::create_spare`]).
pub(crate) const SPARE: &str = "spare.seg.tmp";

/// The file name of segment `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:020}.seg")
}

/// The segment number a file name stands for, if it is a segment's.
pub(crate) fn number_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

impl Segment {
    /// Creates segment `number` in `dir`, `len` bytes, with its header.
    pub(crate) fn create(dir: &Path, number: u64, len: usize) -> io::Result<Segment> {
        let segment = Self::make(dir.join(file_name(number)), number, len, false)?;
        segment.write(0, &format::header(number));
        Ok(segment)
    }

    /// Creates the spare segment of `dir`: allocated and its pages mapped
    /// in ahead, so that the writer who fills the active segment does not
    /// pay for that. It has no header and a name recovery deletes, until
    /// [`Self::install`].
    pub(crate) fn create_spare(dir: &Path, len: usize) -> io::Result<Segment> {
        let path = dir.join(SPARE);
        let _ = std::fs::remove_file(&path);
        Self::make(path, u64::MAX, len, true)
    }

    /// Makes a spare segment number `number`: writes its header and gives it
    /// its name.
    pub(crate) fn install(mut self, dir: &Path, number: u64) -> io::Result<Segment> {
        debug_assert!(self.spare);
        self.write(0, &format::header(number));
        let path = dir.join(file_name(number));
        std::fs::rename(&self.path, &path)?;
        self.number = number;
        self.path = path;
        self.spare = false;
        Ok(self)
    }

    fn make(path: PathBuf, number: u64, len: usize, spare: bool) -> io::Result<Segment> {
        let file = open_options().create_new(true).open(&path)?;
        let made = (|| {
            FileExt::allocate(&file, len as u64)?;
            let mut options = memmap2::MmapOptions::new();
            if spare {
                options.populate();
            }
            let map = options.map_raw(&file)?;
            if map.len() < len {
                return Err(io::Error::other("segment mapping shorter than the file"));
            }
            Ok(map)
        })();
        let map = match made {
            Ok(map) => map,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(Segment {
            number,
            path,
            spare,
            file,
            map,
        })
    }

    /// Opens an existing segment for recovery (and later compaction).
    pub(crate) fn open(path: PathBuf, number: u64) -> io::Result<Segment> {
        let file = open_options().open(&path)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(Segment {
            number,
            path,
            spare: false,
            file,
            map,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The segment's bytes.
    ///
    /// The slice covers the whole mapping, so it must never be taken of the
    /// active segment while a writer may store into it: recovery and
    /// restore take it before the queue is shared (on one thread), and
    /// compaction only of sealed segments (the active one is always the
    /// last, and compaction reads the first of at least two).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len()` bytes, valid while `self.map`
        // lives (as long as `&self`). Nobody writes it while the slice
        // lives: by the contract above, the slice is only taken of a
        // segment no writer stores into (sealed, or not shared yet).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// Copies `bytes` into the segment at `at`.
    ///
    /// Callers hold the journal's lock (or own the segment outright, during
    /// creation and recovery), and write only above every record readers may
    /// look at.
    pub(crate) fn write(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.map.len(), "write past the segment");
        // SAFETY: in bounds (checked above) of a mapping that lives as long
        // as `self`; the range is written by this caller only (the
        // journal's lock) and read by nobody (see `bytes`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(at),
                bytes.len(),
            )
        };
    }

    /// Writes the record `record` (framed: `len`, `crc`, body) at `at`, the
    /// frame last: a process that dies in the middle leaves a zero frame, the
    /// end of the records, rather than a frame promising a body not there.
    pub(crate) fn write_record(&self, at: usize, record: &[u8]) {
        self.write(at + format::FRAME, &record[format::FRAME..]);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        self.write(at, &record[..format::FRAME]);
    }

    /// Zeroes `range` (a torn tail found by recovery) and syncs it.
    pub(crate) fn zero(&self, range: std::ops::Range<usize>) -> io::Result<()> {
        let zeros = vec![0u8; range.len()];
        self.write(range.start, &zeros);
        self.map.flush_range(range.start, range.len())
    }

    /// Makes everything written so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The first record's offset.
    pub(crate) const FIRST: usize = SEGMENT_HEADER;
}

/// Syncs a directory, so that files created or removed in it survive a
/// power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
