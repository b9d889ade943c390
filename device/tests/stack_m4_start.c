/* Bare-metal start for tests/stack_probe.c on QEMU's mps2-an386 (Cortex-M4): vector table, FPU on, .bss zeroed,
 * main, then exit; newlib's output through semihosting (run QEMU with -semihosting). */
#include <stdint.h>
#include <string.h>

extern uint32_t __bss_start__, __bss_end__, __StackTop;
int main(void);

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int _write(int fd, const char *buf, int len)
{
    char chunk[129];
    (void)fd;
    for (int i = 0; i < len; i += 128) {
        int n = len - i < 128 ? len - i : 128;
        memcpy(chunk, buf + i, (size_t)n);
        chunk[n] = '\0';
        semihost(0x04, chunk); /* SYS_WRITE0 */
    }
    return len;
}

static void stop(int code)
{
    /* SYS_EXIT; on AArch32 r1 is the reason itself: ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (1) */
    semihost(0x18, (void *)(uintptr_t)(code == 0 ? 0x20026 : 0x20023));
    for (;;) {
    }
}

void _exit(int code) { stop(code); }

static void fault(void) { stop(99); }

void Reset_Handler(void)
{
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10, CP11 full access (the FPU) */
    __asm__ volatile("dsb\n\tisb");
    for (uint32_t *p = &__bss_start__; p < &__bss_end__; p++) *p = 0;
    stop(main());
}

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &__StackTop, (const void *)Reset_Handler, (const void *)fault, (const void *)fault, (const void *)fault,
    (const void *)fault, (const void *)fault,
};
