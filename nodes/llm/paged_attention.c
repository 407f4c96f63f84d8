/* Paged attention for decode rows on a CPU, reading K/V blocks where they lie in the cache.

   Built at first use by nodes/llm/cpu_attention.py with the system C compiler
   (-O3 -march=native -ffast-math -DHEAD_DIM=<head_dim>) and called through ctypes, which
   releases the GIL for the call. One function per cache dtype (fp32, bf16); scores, softmax and
   the weighted sum of V run in fp32.

   Cache element (kv head h, block b, slot s, dim d) lies at h*kv_stride + b*block_stride +
   s*slot_stride + d (elements). q and out are [n, H, HEAD_DIM] contiguous; blocks [n, width]
   and lens [n] int64: row i attends to the first lens[i] tokens of its blocks. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef HEAD_DIM
#error "compile with -DHEAD_DIM=<the model's head_dim>"
#endif
#define D HEAD_DIM

typedef struct {
    int64_t n, heads, kv_heads, block_size, width, kv_stride, block_stride, slot_stride;
    float scale;
} decode_shape;

static inline float bf16_load(uint16_t x) {
    union { uint32_t u; float f; } v = {(uint32_t)x << 16};
    return v.f;
}

static inline uint16_t bf16_round(float f) { /* round to nearest even, as torch does */
    union { float f; uint32_t u; } v = {f};
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static inline float f32_load(float x) { return x; }
static inline float f32_round(float f) { return f; }

/* Ask for a block's rows ahead of use: the blocks of a sequence lie anywhere in the cache, so
   the hardware prefetcher cannot guess the next one (6% of a layer's decode attention). */
static inline void prefetch_block(const void *block, int64_t block_size, int64_t slot_bytes,
                                  int64_t row_bytes) {
    for (int64_t s = 0; s < block_size; s++)
        for (int64_t b = 0; b < row_bytes; b += 64)
            __builtin_prefetch((const char *)block + s * slot_bytes + b);
}

/* softmax in place over each of the g rows of s (row length len) */
static void softmax_rows(float *s, int64_t g, int64_t len) {
    for (int64_t r = 0; r < g; r++) {
        float *row = s + r * len, m = row[0], sum = 0.f;
        for (int64_t l = 1; l < len; l++) m = row[l] > m ? row[l] : m;
        for (int64_t l = 0; l < len; l++) row[l] = expf(row[l] - m);
        for (int64_t l = 0; l < len; l++) sum += row[l];
        const float inv = 1.f / sum;
        for (int64_t l = 0; l < len; l++) row[l] *= inv;
    }
}

/* One function per dtype T; LOAD turns an element into float, ROUND a float into T, ROW(f, p)
   declares f as the HEAD_DIM floats at p (a cast for fp32, a converted copy for bf16).
   scratch: at least (heads / kv_heads) * width * block_size floats. */
#define DEFINE_DECODE(NAME, T, LOAD, ROUND, ROW)                                                     \
    void NAME(const T *q, const T *kc, const T *vc, const int64_t *blocks, const int64_t *lens, \
              T *out, float *scratch, const decode_shape *sh) {                                  \
        const int64_t G = sh->heads / sh->kv_heads, bs = sh->block_size;                        \
        float qf[G * D], acc[G * D];                                                             \
        for (int64_t i = 0; i < sh->n; i++) {                                                    \
            const int64_t len = lens[i], *table = blocks + i * sh->width;                       \
            for (int64_t h = 0; h < sh->kv_heads; h++) {                                         \
                const T *qh = q + (i * sh->heads + h * G) * D;                                   \
                for (int64_t e = 0; e < G * D; e++) qf[e] = LOAD(qh[e]) * sh->scale;            \
                const T *kh = kc + h * sh->kv_stride, *vh = vc + h * sh->kv_stride;              \
                for (int64_t l = 0; l < len; l++) {                                              \
                    if (l % bs == 0 && l + bs < len)                                             \
                        prefetch_block(kh + table[l / bs + 1] * sh->block_stride, bs,            \
                                       sh->slot_stride * sizeof(T), D * sizeof(T));              \
                    ROW(kf, kh + table[l / bs] * sh->block_stride + (l % bs) * sh->slot_stride); \
                    for (int64_t g = 0; g < G; g++) {                                            \
                        float dot = 0.f;                                                         \
                        for (int64_t d = 0; d < D; d++) dot += qf[g * D + d] * kf[d];           \
                        scratch[g * len + l] = dot;                                              \
                    }                                                                            \
                }                                                                                \
                softmax_rows(scratch, G, len);                                                   \
                memset(acc, 0, sizeof(acc));                                                     \
                for (int64_t l = 0; l < len; l++) {                                              \
                    if (l % bs == 0 && l + bs < len)                                             \
                        prefetch_block(vh + table[l / bs + 1] * sh->block_stride, bs,            \
                                       sh->slot_stride * sizeof(T), D * sizeof(T));              \
                    ROW(vf, vh + table[l / bs] * sh->block_stride + (l % bs) * sh->slot_stride); \
                    for (int64_t g = 0; g < G; g++) {                                            \
                        const float p = scratch[g * len + l];                                    \
                        for (int64_t d = 0; d < D; d++) acc[g * D + d] += p * vf[d];             \
                    }                                                                            \
                }                                                                                \
                T *o = out + (i * sh->heads + h * G) * D;                                        \
                for (int64_t e = 0; e < G * D; e++) o[e] = ROUND(acc[e]);                        \
            }                                                                                    \
        }                                                                                        \
    }

#define F32_ROW(f, p) const float *f = (p)
#define BF16_ROW(f, p)                                                                          \
    float f[D];                                                                                 \
    for (int64_t d_ = 0; d_ < D; d_++) f[d_] = bf16_load((p)[d_])
DEFINE_DECODE(paged_decode_f32, float, f32_load, f32_round, F32_ROW)
DEFINE_DECODE(paged_decode_bf16, uint16_t, bf16_load, bf16_round, BF16_ROW)

/* Write new K and V rows into their cache slots: k element (t, h, d) at
   t*k_strides[0] + h*k_strides[1] + d (v alike); slots[t] = block * block_size + offset. */
void paged_store(const char *k, const char *v, char *kc, char *vc, const int64_t *slots,
                 int64_t tokens, const int64_t *k_strides, const int64_t *v_strides,
                 const decode_shape *sh, int64_t elem) {
    const size_t row = (size_t)D * elem;
    for (int64_t t = 0; t < tokens; t++) {
        const int64_t b = slots[t] / sh->block_size, s = slots[t] % sh->block_size;
        for (int64_t h = 0; h < sh->kv_heads; h++) {
            const int64_t dst = h * sh->kv_stride + b * sh->block_stride + s * sh->slot_stride;
            memcpy(kc + dst * elem, k + (t * k_strides[0] + h * k_strides[1]) * elem, row);
            memcpy(vc + dst * elem, v + (t * v_strides[0] + h * v_strides[1]) * elem, row);
        }
    }
}
