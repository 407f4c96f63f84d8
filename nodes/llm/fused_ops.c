/* The element-wise parts of a Llama layer in one pass each, fp32, for CPUs.

   Built with paged_attention.c into one library (nodes/llm/cpu_attention.py). torch runs each of
   these as 2-6 ops, every one a pass over memory and a dispatch; at a decode step's 64 tokens
   the dispatches cost as much as the arithmetic. Formulas as nodes/llm/model.py's torch path:
   RMSNorm (Zhang & Sennrich 2019) x * rsqrt(mean(x^2) + eps) * w; RoPE in the rotate-half form
   of transformers' Llama; SwiGLU's silu(gate) * up. */
#include <math.h>
#include <stdint.h>

/* x [T, N] += delta (if given), then out [T, N] = rmsnorm(x) * w. */
void add_rms_norm(float *x, const float *delta, const float *w, float *out, int64_t tokens,
                  int64_t n, float eps) {
    for (int64_t t = 0; t < tokens; t++) {
        float *row = x + t * n, *o = out + t * n, sum = 0.f;
        if (delta) {
            const float *d = delta + t * n;
            for (int64_t j = 0; j < n; j++) row[j] += d[j];
        }
        for (int64_t j = 0; j < n; j++) sum += row[j] * row[j];
        const float r = 1.f / sqrtf(sum / (float)n + eps);
        for (int64_t j = 0; j < n; j++) o[j] = row[j] * r * w[j];
    }
}

/* out [T, N] = silu(gate_up[:, :N]) * gate_up[:, N:] */
void silu_mul(const float *gate_up, float *out, int64_t tokens, int64_t n) {
    for (int64_t t = 0; t < tokens; t++) {
        const float *g = gate_up + t * 2 * n, *u = g + n;
        float *o = out + t * n;
        for (int64_t j = 0; j < n; j++) o[j] = g[j] / (1.f + expf(-g[j])) * u[j];
    }
}

/* In place on the first `heads` heads of each token's row of qkv [T, row] (heads of dim D):
   x1, x2 = halves; x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, with cos/sin rows [*, D] taken
   at positions[t] (their two halves are equal, as Llama builds them). */
void rope(float *qkv, const float *cos_t, const float *sin_t, const int64_t *positions,
          int64_t tokens, int64_t heads, int64_t row, int64_t head_dim) {
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < tokens; t++) {
        const float *c = cos_t + positions[t] * head_dim, *s = sin_t + positions[t] * head_dim;
        for (int64_t h = 0; h < heads; h++) {
            float *x1 = qkv + t * row + h * head_dim, *x2 = x1 + half;
            for (int64_t j = 0; j < half; j++) {
                const float a = x1[j], b = x2[j];
                x1[j] = a * c[j] - b * s[j];
                x2[j] = b * c[j + half] + a * s[j + half];
            }
        }
    }
}
