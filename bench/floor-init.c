/* The floor's /init (bench/vm.py): says it runs on the console the kernel gave it, then waits. Nothing else, no
 * libc: a boot to this is what a VM costs before any agent does anything. */
static long syscall3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

void _start(void) {
    static const char mark[] = "HYPER-PROBE-OK\n";
    syscall3(1 /* write */, 1, (long)mark, sizeof mark - 1);
    for (;;)
        syscall3(34 /* pause */, 0, 0, 0);
}
