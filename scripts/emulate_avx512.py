#!/usr/bin/env python3
"""Runs a function of a test process on an emulated x86-64 CPU with AVX-512.

    pip install bochscpu-python==0.4.0
    AMOS_AVX512_EMULATOR=$PWD/scripts/emulate_avx512.py \
        cargo test --release -p amos-snn --lib channel_kernel -- --test-threads=1

The wheel wants glibc 2.38 or later; on an older one (Debian 12) preload a library that
defines its two missing symbols, `__isoc23_strtoull` and `__isoc23_sscanf`, as `strtoull`
and `vsscanf` (a few lines of C, `gcc -shared -fPIC`; `LD_PRELOAD=...` before the command).

For kernels written for AVX-512 on a machine without it. `snn/src/testing.rs`'s `emulated`
writes the test process's memory (`memory.bin`, regions in `regions.txt`; reserved regions
read as zeros) and where to start (`meta.txt`: the function, its argument, the thread's %fs
base, the output buffer) into a directory; this script maps that memory at the same
addresses in BochsCPU, calls the function on a fresh stack in user mode, and writes the
output buffer's bytes to `out.bin`. Pages are loaded as the CPU first touches them. There
is no operating system: system calls are answered by `answer` (the allocator's), and any
exception other than the return to the sentinel address stops the run with an error.
"""

import os
import sys

import bochscpu
import bochscpu.cpu
import bochscpu.memory

PAGE = 4096
SENTINEL = 0xDEAD_0000
STACK_PAGES = 64
STACK_TOP = 0x7E00_0000_0000
GPA_BASE = 0x1_0000_0000
# `syscall` enters a stub, `hlt; sysretq`, whose `hlt` stops the run; the call is answered
# here (see `answer`) and the run goes on from the `sysretq`.
SYSCALL_STUB = 0x7F00_DEAD_0000
SYSCALL_CODE = bytes([0xF4, 0x48, 0x0F, 0x07])
# Where `mmap` hands out memory (zero pages), 64 MiB.
MMAP_AREA = 0x7D00_0000_0000
MMAP_PAGES = 16384
PML4 = 0x10_0000


def segment(selector: int, attr: int, base: int = 0):
    """A flat user-mode segment (code 0x33, data 0x2B), `base` for %fs."""
    seg = bochscpu.Segment()
    seg.present = True
    seg.selector = selector
    seg.base = base
    seg.limit = 0xFFFF_FFFF
    seg.attr = attr
    return seg


def answer(state, mapped) -> int:
    """The result of the system call `state` is in: `mmap` of anonymous memory from the
    area set aside for it; `munmap`, `mprotect` and `madvise` succeed (everything is
    mapped read-write here); anything else is refused (ENOSYS)."""
    number = state.rax
    if number == 9:  # mmap
        length = (state.rsi + PAGE - 1) & ~(PAGE - 1)
        at = mapped[0]
        if at + length > MMAP_AREA + MMAP_PAGES * PAGE:
            return -12  # ENOMEM
        mapped[0] = at + length
        return at
    if number in (10, 11, 28):  # mprotect, munmap, madvise
        return 0
    if number == 20:  # writev: shown (an abort's message)
        text = b""
        for i in range(state.rdx):
            entry = bytes(bochscpu.memory.virt_read(PML4, state.rsi + 16 * i, 16))
            base, length = int.from_bytes(entry[:8], "little"), int.from_bytes(entry[8:], "little")
            text += bytes(bochscpu.memory.virt_read(PML4, base, length))
        print(f"emulate_avx512: the function wrote {text!r}", file=sys.stderr)
        return len(text)
    print(f"emulate_avx512: system call {number} refused", file=sys.stderr)
    return -38


def main(snapshot: str) -> int:
    meta = {}
    for line in open(os.path.join(snapshot, "meta.txt")):
        key, *values = line.split()
        meta[key] = [int(v) for v in values]
    regions = []
    for line in open(os.path.join(snapshot, "regions.txt")):
        start, end, perms = line.split()
        regions.append((int(start), int(end), perms))
    image = open(os.path.join(snapshot, "memory.bin"), "rb")

    sess = bochscpu.Session()
    # GPA -> offset in memory.bin (None: a zero page of the stack).
    backing = {}

    def missing_page(gpa):
        page = gpa & ~(PAGE - 1)
        hva = bochscpu.memory.allocate_host_page()
        bochscpu.memory.page_insert(page, hva)
        offset = backing.get(page)
        if offset is not None:
            image.seek(offset)
            data = image.read(PAGE)
            if any(data):
                bochscpu.memory.phy_write(page, list(data))

    sess.missing_page_handler = missing_page

    table = bochscpu.memory.PageMapLevel4Table()
    gpa = GPA_BASE
    offset = 0
    for start, end, perms in regions:
        readable = perms.startswith("r")
        for gva in range(start, end, PAGE):
            table.insert(gva, gpa, 0 if "x" in perms else 1)
            if readable:
                backing[gpa] = offset + (gva - start)
            gpa += PAGE
        if readable:
            offset += end - start
    for i in range(STACK_PAGES):
        table.insert(STACK_TOP - (i + 1) * PAGE, gpa, 1)
        gpa += PAGE
    table.insert(SYSCALL_STUB, gpa, 0)
    gpa += PAGE
    for i in range(MMAP_PAGES):
        table.insert(MMAP_AREA + i * PAGE, gpa, 1)
        gpa += PAGE
    for hva, table_gpa in table.commit(PML4):
        bochscpu.memory.page_insert(table_gpa, hva)

    state = bochscpu.State()
    bochscpu.cpu.set_long_mode(state)
    state.cr3 = PML4
    # OSFXSR, OSXMMEXCPT and OSXSAVE; x87, SSE, AVX and the three AVX-512 states.
    state.cr4 = state.cr4 | (1 << 9) | (1 << 10) | (1 << 18)
    state.xcr0 = 0xE7
    state.mxcsr = 0x1F80
    state.fpcw = 0x37F
    state.efer = state.efer | 1  # SCE: `syscall` enabled
    state.lstar = SYSCALL_STUB
    state.star = (0x23 << 48) | (0x10 << 32)
    state.sfmask = 0
    if not bochscpu.memory.virt_write(PML4, SYSCALL_STUB, list(SYSCALL_CODE)):
        print("emulate_avx512: cannot write the system call stub", file=sys.stderr)
        return 1
    rsp = STACK_TOP - 64
    if not bochscpu.memory.virt_write(PML4, rsp, list(SENTINEL.to_bytes(8, "little"))):
        print("emulate_avx512: cannot write the stack", file=sys.stderr)
        return 1
    state.rsp = rsp
    state.rip = meta["rip"][0]
    state.rdi = meta["rdi"][0]
    state.cs = segment(0x33, 0x22FB)
    data = segment(0x2B, 0xCF3)
    state.ds = data
    state.ss = data
    state.es = data
    state.gs = data
    state.fs = segment(0x2B, 0xCF3, base=meta["fs"][0])
    sess.cpu.state = state

    stopped = {}

    def exception(sess, cpu_id, vector, error_code):
        stopped["vector"] = vector
        stopped["error"] = error_code
        sess.stop()

    def hlt(sess, cpu_id):
        stopped["syscall"] = True
        sess.stop()

    hook = bochscpu.Hook()
    hook.exception = exception
    hook.hlt = hlt
    mapped = [MMAP_AREA]
    while True:
        stopped.clear()
        sess.run([hook])
        state = sess.cpu.state
        if not stopped.get("syscall"):
            break
        state.rax = answer(state, mapped) & 0xFFFF_FFFF_FFFF_FFFF
        state.rip = SYSCALL_STUB + 1
        sess.cpu.state = state
    rip = sess.cpu.state.rip
    if rip != SENTINEL:
        print(
            f"emulate_avx512: stopped at {rip:#x} by exception {stopped} (cr2 {sess.cpu.state.cr2:#x}), not at the return",
            file=sys.stderr,
        )
        return 1
    out, length = meta["out"]
    result = bochscpu.memory.virt_read(PML4, out, length)
    with open(os.path.join(snapshot, "out.bin"), "wb") as f:
        f.write(bytes(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
