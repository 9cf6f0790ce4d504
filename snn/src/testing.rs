//! Helpers shared by the crate's tests.

/// Seeded values uniform in [−1, 1) (a linear congruential generator): the same sequence
/// for the same seed on every machine.
pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

/// Runs `f` on an emulated CPU where `AMOS_AVX512_EMULATOR` names the emulator script
/// (`scripts/emulate_avx512.py`): the AVX-512 kernels' tests on a machine without AVX-512.
/// The process's memory is written out with where `f` starts; the script runs `f` from there
/// on an emulated x86-64 CPU with AVX-512 and writes back the bytes of `out`, which are copied
/// into `out`. `f` runs without an operating system: the script answers the allocator's
/// memory calls and nothing else (no output, no panic). The snapshot is only consistent when
/// no other thread allocates meanwhile: run such tests with `--test-threads=1`. Returns false
/// where no emulator is named.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn emulated(f: &mut dyn FnMut(), out: &mut [f32]) -> bool {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    let Some(script) = std::env::var_os("AMOS_AVX512_EMULATOR") else {
        return false;
    };
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("amos-emulated-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a snapshot directory");
    extern "C" fn trampoline(f: *mut &mut dyn FnMut()) {
        // SAFETY: the pointer below, to a live `&mut dyn FnMut()`.
        unsafe { (*f)() }
    }
    let mut f: &mut dyn FnMut() = f;
    let arg: *mut &mut dyn FnMut() = &mut f;
    // Room at the top of this thread's heap for what `f` allocates (below the sizes the
    // allocator would map apart, and below those it gives back at once).
    drop(std::hint::black_box(Vec::<u8>::with_capacity(120 << 10)));
    let fs_base: u64;
    // SAFETY: glibc's thread control block starts with a pointer to itself, at %fs:0.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:0", out(reg) fs_base) };
    // Nothing below allocates until the memory is written out (the heap must be written as
    // it will be when `f` runs): the files opened, the room for the list of regions made.
    let mem = std::fs::File::open("/proc/self/mem").expect("/proc/self/mem");
    let mut image = std::fs::File::create(dir.join("memory.bin")).expect("memory.bin");
    let mut list = std::fs::File::create(dir.join("regions.txt")).expect("regions.txt");
    let mut regions = String::with_capacity(1 << 16);
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let mut chunk = [0u8; 1 << 16];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if name.starts_with("[v") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (start, end) = (
            u64::from_str_radix(start, 16).expect("hex"),
            u64::from_str_radix(end, 16).expect("hex"),
        );
        // Reserved, not readable (a heap's room to grow): zeros there. So too where a
        // region goes away meanwhile (another test's thread unmapping it).
        if perms.starts_with('r') {
            for at in (start..end).step_by(chunk.len()) {
                let len = chunk.len().min((end - at) as usize);
                if mem.read_exact_at(&mut chunk[..len], at).is_err() {
                    chunk[..len].fill(0);
                }
                image.write_all(&chunk[..len]).expect("memory.bin");
            }
        }
        use std::fmt::Write as _;
        let _ = writeln!(regions, "{start} {end} {perms}");
    }
    list.write_all(regions.as_bytes()).expect("regions.txt");
    let meta = format!(
        "rip {}\nrdi {}\nfs {}\nout {} {}\n",
        trampoline as *const () as usize,
        arg as usize,
        fs_base,
        out.as_ptr() as usize,
        std::mem::size_of_val(out),
    );
    std::fs::write(dir.join("meta.txt"), meta).expect("meta.txt");
    drop(image);
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .status()
        .expect("the emulator runs");
    assert!(status.success(), "the emulator failed on {}", dir.display());
    let mut bytes = Vec::new();
    std::fs::File::open(dir.join("out.bin"))
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("out.bin");
    assert_eq!(bytes.len(), std::mem::size_of_val(out));
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    true
}
