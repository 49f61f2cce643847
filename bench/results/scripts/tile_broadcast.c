/* The register tile's k loop two ways, one thread, operands in L1: broadcasting each A element
 * once into a register for the row's 3 multiply-adds (what GCC emits from the intrinsics) or as
 * each multiply-add's own memory operand ({1to16}); also 6x4 and 12x2 tiles. GFLOP/s, best of 5.
 *
 *     gcc -O3 -march=native -o /tmp/tile_broadcast bench/results/scripts/tile_broadcast.c
 *     /tmp/tile_broadcast 128 200000 && /tmp/tile_broadcast 384 70000
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
typedef __m512 vf;
#define MR 8
#define NV 3
#define VL 16
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
__attribute__((noinline)) void tile_sep(long kc, const float *restrict a, const float *restrict b, float *c){
  vf acc[MR][NV];
  for(int r=0;r<MR;r++)for(int v=0;v<NV;v++)acc[r][v]=_mm512_setzero_ps();
  for(long k=0;k<kc;k++){ vf bv[NV]; for(int v=0;v<NV;v++)bv[v]=_mm512_load_ps(b+v*VL);
    for(int r=0;r<MR;r++){vf ar=_mm512_set1_ps(a[r]); for(int v=0;v<NV;v++)acc[r][v]=_mm512_fmadd_ps(ar,bv[v],acc[r][v]);}
    a+=MR;b+=NV*VL;}
  for(int r=0;r<MR;r++)for(int v=0;v<NV;v++)_mm512_store_ps(c+r*NV*VL+v*VL,acc[r][v]);
}
__attribute__((noinline)) void tile_emb(long kc, const float *restrict a, const float *restrict b, float *c){
  vf acc[MR][NV];
  for(int r=0;r<MR;r++)for(int v=0;v<NV;v++)acc[r][v]=_mm512_setzero_ps();
  for(long k=0;k<kc;k++){ vf bv[NV]; for(int v=0;v<NV;v++)bv[v]=_mm512_load_ps(b+v*VL);
#define R(r) __asm__("vfmadd231ps %[m]%{1to16%}, %[b0], %[c0]\n\tvfmadd231ps %[m]%{1to16%}, %[b1], %[c1]\n\tvfmadd231ps %[m]%{1to16%}, %[b2], %[c2]" \
     : [c0]"+v"(acc[r][0]),[c1]"+v"(acc[r][1]),[c2]"+v"(acc[r][2]) : [m]"m"(a[r]),[b0]"v"(bv[0]),[b1]"v"(bv[1]),[b2]"v"(bv[2]));
    R(0)R(1)R(2)R(3)R(4)R(5)R(6)R(7)
    a+=MR;b+=NV*VL;}
  for(int r=0;r<MR;r++)for(int v=0;v<NV;v++)_mm512_store_ps(c+r*NV*VL+v*VL,acc[r][v]);
}
/* 6 rows x 4 vectors */
__attribute__((noinline)) void tile_6x4(long kc, const float *restrict a, const float *restrict b, float *c){
  vf acc[6][4];
  for(int r=0;r<6;r++)for(int v=0;v<4;v++)acc[r][v]=_mm512_setzero_ps();
  for(long k=0;k<kc;k++){ vf bv[4]; for(int v=0;v<4;v++)bv[v]=_mm512_load_ps(b+v*VL);
    for(int r=0;r<6;r++){vf ar=_mm512_set1_ps(a[r]); for(int v=0;v<4;v++)acc[r][v]=_mm512_fmadd_ps(ar,bv[v],acc[r][v]);}
    a+=6;b+=4*VL;}
  for(int r=0;r<6;r++)for(int v=0;v<4;v++)_mm512_store_ps(c+r*4*VL+v*VL,acc[r][v]);
}
/* 12 rows x 2 vectors */
__attribute__((noinline)) void tile_12x2(long kc, const float *restrict a, const float *restrict b, float *c){
  vf acc[12][2];
  for(int r=0;r<12;r++)for(int v=0;v<2;v++)acc[r][v]=_mm512_setzero_ps();
  for(long k=0;k<kc;k++){ vf bv[2]; for(int v=0;v<2;v++)bv[v]=_mm512_load_ps(b+v*VL);
    for(int r=0;r<12;r++){vf ar=_mm512_set1_ps(a[r]); for(int v=0;v<2;v++)acc[r][v]=_mm512_fmadd_ps(ar,bv[v],acc[r][v]);}
    a+=12;b+=2*VL;}
  for(int r=0;r<12;r++)for(int v=0;v<2;v++)_mm512_store_ps(c+r*2*VL+v*VL,acc[r][v]);
}
int main(int argc,char**argv){
  long kc=atol(argv[1]); int reps=atoi(argv[2]);
  float *a=aligned_alloc(64,4*16*kc*4+64),*b=aligned_alloc(64,4*64*kc*4+64),*c=aligned_alloc(64,64*64*4);
  for(long i=0;i<16*kc*4;i++)a[i]=1e-3f*(i%7); for(long i=0;i<64*kc*4;i++)b[i]=1e-3f*(i%5);
  const char*names[]={"sep8x3","emb8x3","sep6x4","sep12x2"};
  for(int round=0;round<3;round++)
  for(int t=0;t<4;t++){ double best=1e9;
    for(int rr=0;rr<5;rr++){ double t0=now();
      for(int i=0;i<reps;i++){ if(t==0)tile_sep(kc,a,b,c); else if(t==1)tile_emb(kc,a,b,c); else if(t==2) tile_6x4(kc,a,b,c); else tile_12x2(kc,a,b,c);}
      double dt=now()-t0; if(dt<best)best=dt;}
    printf("%s kc=%ld %.1f GFLOP/s\n",names[t],kc,2.0*24*16*kc*reps/best/1e9);}
  return 0;}
