/* A process that sees this CPU as one without AVX-512, AMX or VNNI: an AVX2 + FMA machine.
 *
 *     cc -shared -fPIC -O2 -o hold_avx2.so bench/hold_avx2.c
 *     LD_PRELOAD=./hold_avx2.so python ...
 *
 * bench_cpu.py --avx2 builds and preloads it, so that every library in the process (torch's
 * ATen, oneDNN and MKL, and onnxruntime, which has no switch of its own) picks the kernels it
 * picks on a CPU without AVX-512: each asks the CPU with the `cpuid` instruction when it loads.
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, "cpuid_fault" in /proc/cpuinfo) turns
 * every `cpuid` in the process into a SIGSEGV; the handler below runs the real instruction,
 * clears the feature bits an AVX2-only CPU (AMD Zen 2/3, Intel before Ice Lake) lacks, writes
 * the answer into the faulting thread's registers and steps over the instruction. Threads
 * inherit the setting; an exec drops it (and loads this again through LD_PRELOAD).
 *
 * On success the constructor sets HOLD_AVX2=1 in the environment, so the process can tell it
 * is held. What ran before it (the dynamic loader choosing glibc's string functions) is not.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

static void cpuid_allowed(int on) { syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void hold(unsigned leaf, unsigned sub, unsigned r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
        r[1] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* ECX: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        r[2] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* EDX: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX_BF16, AVX512_FP16, AMX_TILE, AMX_INT8 */
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX_VNNI, AVX512_BF16, AMX_FP16, AVX_IFMA */
        r[0] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
    } else if (leaf == 0xd && sub == 0) {
        /* EAX: the XSAVE state components the CPU has: AVX-512's (5-7) and AMX's (17, 18) */
        r[0] &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18));
    }
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real crash: let it happen as it would */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX], r[4];
    cpuid_allowed(1);
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    cpuid_allowed(0);
    hold(leaf, sub, r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        return;
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) { /* no CPUID faulting here */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    setenv("HOLD_AVX2", "1", 1);
}
