// scripts/cpu_peak.c: the per-core peak of the three dot-product instructions (docs/cpu-runtimes.md):
//   gcc -O2 -mavx512f -mavx512bf16 -mavx512vnni -o /tmp/cpu_peak scripts/cpu_peak.c && /tmp/cpu_peak
// Peak per-core throughput of the three dot-product instructions on this CPU: 12 independent accumulators each.
#include <stdio.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define R12(I) I(0) I(1) I(2) I(3) I(4) I(5) I(6) I(7) I(8) I(9) I(10) I(11)
#define FMA(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n"
#define BF(i) "vdpbf16ps %%zmm30, %%zmm31, %%zmm" #i "\n"
#define VNNI(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n"
#define LOOP(NAME, BODY) static double NAME(long n){double t=now(); \
  __asm__ volatile("vpxord %%zmm30,%%zmm30,%%zmm30\n vpxord %%zmm31,%%zmm31,%%zmm31\n" \
  "1:\n" R12(BODY) "dec %0\n jnz 1b\n" : "+r"(n) :: "cc", "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm30","xmm31"); return now()-t;}
LOOP(fma32, FMA) LOOP(bf, BF) LOOP(vnni, VNNI)
int main(void){
  long n = 200000000; // 12 instructions per iteration
  for (int rep = 0; rep < 2; rep++) {
    double a = fma32(n), b = bf(n), c = vnni(n);
    double ins = 12.0 * n;
    // ops per instruction (multiply + add counted separately): fp32 FMA 16x2, bf16 dot 32x2, int8 dot 64x2
    printf("fp32 FMA  zmm: %.2f G instr/s, %.0f GFLOP/s\n", ins / a / 1e9, ins * 32 / a / 1e9);
    printf("bf16 dot  zmm: %.2f G instr/s, %.0f GFLOP/s (%.2fx fp32)\n", ins / b / 1e9, ins * 64 / b / 1e9, (ins*64/b)/(ins*32/a));
    printf("int8 VNNI zmm: %.2f G instr/s, %.0f GOP/s   (%.2fx fp32)\n", ins / c / 1e9, ins * 128 / c / 1e9, (ins*128/c)/(ins*32/a));
  }
}
