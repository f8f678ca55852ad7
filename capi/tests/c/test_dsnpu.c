/*
 * The C ABI from C: allocates with aclrtMalloc on the AscendCL library named by DSNPU_ACL_LIB (the
 * simulator in the tests; libdsnpu.so loads the same file), calls each dsnpu entry point on a stream
 * of its own, and checks the results against values computed here. Then bad arguments: each must
 * return an error status with a message, never crash. Then the model engine (dsnpu_engine_*) on the
 * tiny checkpoint the Rust harness names. With DSNPU_TEST_OUT_OF_MEMORY set, only the out-of-memory
 * cases (test_out_of_memory), on the small device the harness gives. Prints one line per check; exits
 * non-zero on the first failure.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsnpu.h"

typedef int (*acl_init_t)(const char *);
typedef int (*acl_set_device_t)(int32_t);
typedef int (*acl_create_stream_t)(void **);
typedef int (*acl_destroy_stream_t)(void *);
typedef int (*acl_sync_stream_t)(void *);
typedef int (*acl_malloc_t)(void **, size_t, int);
typedef int (*acl_free_t)(void *);
typedef int (*acl_memcpy_t)(void *, size_t, const void *, size_t, int);

enum { H2D = 1, D2H = 2 };

static acl_init_t acl_init;
static acl_set_device_t acl_set_device;
static acl_create_stream_t acl_create_stream;
static acl_destroy_stream_t acl_destroy_stream;
static acl_sync_stream_t acl_sync_stream;
static acl_malloc_t acl_malloc;
static acl_free_t acl_free;
static acl_memcpy_t acl_memcpy;

static DsnpuContext *ctx;
static int checks;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define ACL(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) FAIL("%s = %d", #call, rc_);                                                 \
    } while (0)

#define OK(call)                                                                                   \
    do {                                                                                           \
        int32_t st_ = (call);                                                                      \
        if (st_ != DSNPU_STATUS_OK)                                                                \
            FAIL("%s = %s: %s", #call, dsnpu_status_name(st_),                                     \
                 dsnpu_last_error() ? dsnpu_last_error() : "(no message)");                       \
        if (dsnpu_last_error() != NULL) FAIL("%s: success left an error message", #call);         \
    } while (0)

static void *sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) FAIL("symbol %s: %s", name, dlerror());
    return p;
}

static void *dev_upload(const void *host, size_t bytes) {
    void *d = NULL;
    ACL(acl_malloc(&d, bytes, 0));
    ACL(acl_memcpy(d, bytes, host, bytes, H2D));
    return d;
}

static void *dev_alloc(size_t bytes) {
    void *d = NULL;
    ACL(acl_malloc(&d, bytes, 0));
    return d;
}

static void download(void *host, const void *dev, size_t bytes) {
    ACL(acl_memcpy(host, bytes, dev, bytes, D2H));
}

static void *new_stream(void) {
    void *s = NULL;
    ACL(acl_create_stream(&s));
    return s;
}

static void done_stream(void *s) {
    ACL(acl_sync_stream(s));
    OK(dsnpu_context_release_stream(ctx, s));
    ACL(acl_destroy_stream(s));
}

/* Deterministic values in [-1, 1). */
static float val(int i, int salt) {
    unsigned h = (unsigned)i * 2654435761u + (unsigned)salt * 40503u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return (float)(h % 2000u) / 1000.0f - 1.0f;
}

static void fill(float *a, int n, int salt) {
    for (int i = 0; i < n; i++) a[i] = val(i, salt);
}

static void close_to(const char *what, const float *got, const float *want, int n, float atol,
                     float rtol) {
    for (int i = 0; i < n; i++) {
        if (!(fabsf(got[i] - want[i]) <= atol + rtol * fabsf(want[i])))
            FAIL("%s[%d]: got %.7g want %.7g", what, i, got[i], want[i]);
    }
    checks++;
    printf("ok %s (%d values)\n", what, n);
}

static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static float silu(float g) { return g / (1.0f + expf(-g)); }

static void expect_error(const char *what, int32_t st, int32_t want, const char *needle);

static void test_rms_norm(void) {
    enum { R = 3, C = 37 };
    float x[R * C], w[C], y[R * C], want[R * C];
    fill(x, R * C, 1);
    fill(w, C, 2);
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[r * C + c] * x[r * C + c];
        float inv = (float)(1.0 / sqrt(ss / C + 1e-6));
        for (int c = 0; c < C; c++) want[r * C + c] = x[r * C + c] * inv * w[c];
    }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dw = dev_upload(w, sizeof w), *dy = dev_alloc(sizeof y);
    OK(dsnpu_rms_norm(ctx, s, DSNPU_DTYPE_F32, dx, dw, dy, R, C, 1e-6f));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    close_to("rms_norm f32", y, want, R * C, 1e-5f, 1e-5f);

    /* The same in bf16: inputs rounded to bf16 here, output compared within 3 bf16 ulps. */
    uint16_t xb[R * C], wb[C], yb[R * C];
    float xr[R * C], wr[C], got[R * C];
    for (int i = 0; i < R * C; i++) xr[i] = from_bf16(xb[i] = to_bf16(x[i]));
    for (int i = 0; i < C; i++) wr[i] = from_bf16(wb[i] = to_bf16(w[i]));
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[r * C + c] * xr[r * C + c];
        float inv = (float)(1.0 / sqrt(ss / C + 1e-6));
        for (int c = 0; c < C; c++) want[r * C + c] = xr[r * C + c] * inv * wr[c];
    }
    void *dxb = dev_upload(xb, sizeof xb), *dwb = dev_upload(wb, sizeof wb), *dyb = dev_alloc(sizeof yb);
    OK(dsnpu_rms_norm(ctx, s, DSNPU_DTYPE_BF16, dxb, dwb, dyb, R, C, 1e-6f));
    ACL(acl_sync_stream(s));
    download(yb, dyb, sizeof yb);
    for (int i = 0; i < R * C; i++) got[i] = from_bf16(yb[i]);
    close_to("rms_norm bf16", got, want, R * C, 1.0f / 128, 2.0f / 128);
    done_stream(s);
    acl_free(dx), acl_free(dw), acl_free(dy), acl_free(dxb), acl_free(dwb), acl_free(dyb);
}

static void test_add_rms_norm(void) {
    enum { R = 2, C = 16 };
    float x[R * C], res[R * C], w[C], y[R * C], sum[R * C], want_y[R * C], want_s[R * C];
    fill(x, R * C, 3);
    fill(res, R * C, 4);
    fill(w, C, 5);
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int c = 0; c < C; c++) {
            float v = x[r * C + c] + res[r * C + c];
            want_s[r * C + c] = v;
            ss += (double)v * v;
        }
        float inv = (float)(1.0 / sqrt(ss / C + 1e-6));
        for (int c = 0; c < C; c++) want_y[r * C + c] = want_s[r * C + c] * inv * w[c];
    }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dr = dev_upload(res, sizeof res), *dw = dev_upload(w, sizeof w);
    void *dy = dev_alloc(sizeof y), *ds = dev_alloc(sizeof sum);
    OK(dsnpu_add_rms_norm(ctx, s, DSNPU_DTYPE_F32, dx, dr, dw, dy, ds, R, C, 1e-6f));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    download(sum, ds, sizeof sum);
    close_to("add_rms_norm sum", sum, want_s, R * C, 0, 0);
    close_to("add_rms_norm y", y, want_y, R * C, 1e-5f, 1e-5f);
    done_stream(s);
    acl_free(dx), acl_free(dr), acl_free(dw), acl_free(dy), acl_free(ds);
}

static void test_rope(void) {
    enum { T = 2, H = 3, D = 8, P = 5 };
    float x[T * H * D], y[T * H * D], want[T * H * D], cs[P * D / 2], sn[P * D / 2];
    int32_t pos[T] = {4, 1};
    fill(x, T * H * D, 6);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < D / 2; i++) {
            float ang = (float)p * powf(10000.0f, -2.0f * i / D);
            cs[p * D / 2 + i] = cosf(ang);
            sn[p * D / 2 + i] = sinf(ang);
        }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < D / 2; i++) {
                const float *row = x + (t * H + h) * D;
                float c = cs[pos[t] * D / 2 + i], sv = sn[pos[t] * D / 2 + i];
                float a = row[i], b = row[i + D / 2]; /* half-split pairs */
                want[(t * H + h) * D + i] = a * c - b * sv;
                want[(t * H + h) * D + i + D / 2] = b * c + a * sv;
            }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dp = dev_upload(pos, sizeof pos);
    void *dc = dev_upload(cs, sizeof cs), *dsn = dev_upload(sn, sizeof sn), *dy = dev_alloc(sizeof y);
    OK(dsnpu_rope(ctx, s, DSNPU_DTYPE_F32, dx, dp, dc, dsn, dy, T, H, D, P, DSNPU_ROPE_HALF_SPLIT));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    close_to("rope half-split f32", y, want, T * H * D, 1e-6f, 1e-5f);
    done_stream(s);
    acl_free(dx), acl_free(dp), acl_free(dc), acl_free(dsn), acl_free(dy);
}

static void test_silu_mul(void) {
    enum { R = 3, I = 10 };
    float gu[R * 2 * I], out[R * I], want[R * I];
    fill(gu, R * 2 * I, 7);
    for (int i = 0; i < R * 2 * I; i++) gu[i] *= 6.0f;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < I; i++) want[r * I + i] = silu(gu[r * 2 * I + i]) * gu[r * 2 * I + I + i];
    void *s = new_stream();
    void *dg = dev_upload(gu, sizeof gu), *dout = dev_alloc(sizeof out);
    OK(dsnpu_silu_mul(ctx, s, DSNPU_DTYPE_F32, dg, dout, R, I));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    close_to("silu_mul f32", out, want, R * I, 1e-5f, 1e-5f);
    done_stream(s);
    acl_free(dg), acl_free(dout);
}

static void test_linear(void) {
    enum { M = 3, K = 20, N = 5 };
    float x[M * K], w[N * K], bias[N], y[M * N], want[M * N];
    fill(x, M * K, 8);
    fill(w, N * K, 9);
    fill(bias, N, 10);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = bias[n];
            for (int k = 0; k < K; k++) acc += (double)x[m * K + k] * w[n * K + k];
            want[m * N + n] = (float)acc;
        }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dw = dev_upload(w, sizeof w), *db = dev_upload(bias, sizeof bias);
    void *dy = dev_alloc(sizeof y);
    OK(dsnpu_linear(ctx, s, DSNPU_DTYPE_F32, dx, dw, db, dy, M, K, N));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    close_to("linear f32 (bias)", y, want, M * N, 1e-5f, 1e-5f);
    done_stream(s);
    acl_free(dx), acl_free(dw), acl_free(db), acl_free(dy);
}

static void test_gating(void) {
    enum { T = 2, E = 8, K = 2 };
    /* Distinct logits: token 0 prefers experts 5 then 2, token 1 experts 0 then 7. */
    float logits[T * E] = {0.1f, -0.3f, 1.5f, 0.2f, -1.0f, 2.0f, 0.0f, 0.3f,
                           3.0f, 0.5f, -0.5f, 0.1f, 0.2f, -2.0f, 0.4f, 1.0f};
    int32_t want_ids[T * K] = {5, 2, 0, 7}, ids[T * K];
    float w[T * K], want_w[T * K];
    for (int t = 0; t < T; t++) {
        /* softmax scores; normalized over the chosen two, so the softmax denominator cancels. */
        float a = expf(logits[t * E + want_ids[t * K]]), b = expf(logits[t * E + want_ids[t * K + 1]]);
        want_w[t * K] = a / (a + b);
        want_w[t * K + 1] = b / (a + b);
    }
    void *s = new_stream();
    void *dl = dev_upload(logits, sizeof logits), *di = dev_alloc(sizeof ids), *dw = dev_alloc(sizeof w);
    OK(dsnpu_moe_gating_topk(ctx, s, DSNPU_DTYPE_F32, dl, NULL, di, dw, T, E, K, 1, 1,
                             DSNPU_SCORE_SOFTMAX, 1, 1.0f));
    ACL(acl_sync_stream(s));
    download(ids, di, sizeof ids);
    download(w, dw, sizeof w);
    for (int i = 0; i < T * K; i++)
        if (ids[i] != want_ids[i]) FAIL("gating ids[%d] = %d, want %d", i, ids[i], want_ids[i]);
    checks++;
    printf("ok moe_gating_topk ids\n");
    close_to("moe_gating_topk weights", w, want_w, T * K, 1e-6f, 1e-5f);
    done_stream(s);
    acl_free(dl), acl_free(di), acl_free(dw);
}

/* The dispatch this file expects: pairs sorted stably by expert. */
enum { RT = 3, RH = 4, RK = 2, RE = 4 };
static const int32_t route_ids[RT * RK] = {2, 0, 1, 2, 0, 3};

static void expected_dispatch(const float *x, float *ex, int32_t *row_idx, int64_t *counts) {
    int r = 0;
    for (int e = 0; e < RE; e++) {
        counts[e] = 0;
        for (int p = 0; p < RT * RK; p++)
            if (route_ids[p] == e) {
                memcpy(ex + r * RH, x + (p / RK) * RH, RH * sizeof(float));
                row_idx[p] = r++;
                counts[e]++;
            }
    }
}

static void test_init_routing(void) {
    float x[RT * RH], ex[RT * RK * RH], want_ex[RT * RK * RH];
    int32_t row_idx[RT * RK], want_idx[RT * RK];
    int64_t counts[RE], want_counts[RE];
    fill(x, RT * RH, 11);
    expected_dispatch(x, want_ex, want_idx, want_counts);
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *di = dev_upload(route_ids, sizeof route_ids);
    void *dex = dev_alloc(sizeof ex), *dri = dev_alloc(sizeof row_idx), *dc = dev_alloc(sizeof counts);
    OK(dsnpu_moe_init_routing(ctx, s, DSNPU_DTYPE_F32, dx, di, dex, dri, dc, RT, RH, RK, RE, -1, -1,
                              DSNPU_LIST_COUNT));
    ACL(acl_sync_stream(s));
    download(ex, dex, sizeof ex);
    download(row_idx, dri, sizeof row_idx);
    download(counts, dc, sizeof counts);
    for (int p = 0; p < RT * RK; p++)
        if (row_idx[p] != want_idx[p]) FAIL("init_routing row_idx[%d] = %d, want %d", p, row_idx[p], want_idx[p]);
    for (int e = 0; e < RE; e++)
        if (counts[e] != want_counts[e]) FAIL("init_routing counts[%d] = %lld", e, (long long)counts[e]);
    checks++;
    printf("ok moe_init_routing indices and counts\n");
    close_to("moe_init_routing expanded_x", ex, want_ex, RT * RK * RH, 0, 0);

    /* int8: codes within one step of x / scale, scale = max|row| / 127. */
    int8_t q[RT * RK * RH];
    float scales[RT * RK];
    void *dq = dev_alloc(sizeof q), *dsc = dev_alloc(sizeof scales);
    OK(dsnpu_moe_init_routing_quant(ctx, s, DSNPU_DTYPE_F32, dx, di, dq, dsc, dri, dc, RT, RH, RK, RE,
                                    -1, -1, DSNPU_LIST_COUNT));
    ACL(acl_sync_stream(s));
    download(q, dq, sizeof q);
    download(scales, dsc, sizeof scales);
    for (int r = 0; r < RT * RK; r++) {
        float amax = 0;
        for (int h = 0; h < RH; h++) amax = fmaxf(amax, fabsf(want_ex[r * RH + h]));
        float want_scale = amax / 127.0f;
        if (fabsf(scales[r] - want_scale) > 1e-6f * (1 + want_scale)) FAIL("quant scale[%d] = %g, want %g", r, scales[r], want_scale);
        for (int h = 0; h < RH; h++) {
            float ideal = want_ex[r * RH + h] / want_scale;
            if (fabsf((float)q[r * RH + h] - ideal) > 1.0f) FAIL("quant code[%d,%d] = %d, ideal %g", r, h, q[r * RH + h], ideal);
        }
    }
    checks++;
    printf("ok moe_init_routing_quant codes and scales\n");
    done_stream(s);
    acl_free(dx), acl_free(di), acl_free(dex), acl_free(dri), acl_free(dc), acl_free(dq), acl_free(dsc);
}

static void test_grouped(void) {
    enum { R = 5, G = 2, N = 3, K = 4, I = 4, HD = 8 };
    int64_t counts[G] = {2, 3};
    float x[R * K], w[G * N * K], y[R * N], want[R * N];
    fill(x, R * K, 12);
    fill(w, G * N * K, 13);
    for (int r = 0; r < R; r++) {
        int g = r < 2 ? 0 : 1;
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int k = 0; k < K; k++) acc += (double)x[r * K + k] * w[(g * N + n) * K + k];
            want[r * N + n] = (float)acc;
        }
    }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dw = dev_upload(w, sizeof w), *dg = dev_upload(counts, sizeof counts);
    void *dy = dev_alloc(sizeof y);
    OK(dsnpu_grouped_matmul(ctx, s, DSNPU_DTYPE_F32, dx, dw, dg, dy, R, G, N, K, DSNPU_LIST_COUNT));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    close_to("grouped_matmul f32", y, want, R * N, 1e-5f, 1e-5f);

    /* Expert FFN: rows 0 in group 0, rows 1..4 in group 1 (cumsum list {1, 4}). */
    int64_t cums[G] = {1, 4};
    float xf[4 * HD], wg[G * I * HD], wu[G * I * HD], wd[G * HD * I], yf[4 * HD], wantf[4 * HD];
    fill(xf, 4 * HD, 14);
    fill(wg, G * I * HD, 15);
    fill(wu, G * I * HD, 16);
    fill(wd, G * HD * I, 17);
    for (int r = 0; r < 4; r++) {
        int g = r < 1 ? 0 : 1;
        float h[I];
        for (int i = 0; i < I; i++) {
            double a = 0, b = 0;
            for (int k = 0; k < HD; k++) {
                a += (double)xf[r * HD + k] * wg[(g * I + i) * HD + k];
                b += (double)xf[r * HD + k] * wu[(g * I + i) * HD + k];
            }
            h[i] = silu((float)a) * (float)b;
        }
        for (int o = 0; o < HD; o++) {
            double acc = 0;
            for (int i = 0; i < I; i++) acc += (double)h[i] * wd[(g * HD + o) * I + i];
            wantf[r * HD + o] = (float)acc;
        }
    }
    void *dxf = dev_upload(xf, sizeof xf), *dwg = dev_upload(wg, sizeof wg), *dwu = dev_upload(wu, sizeof wu);
    void *dwd = dev_upload(wd, sizeof wd), *dcs = dev_upload(cums, sizeof cums), *dyf = dev_alloc(sizeof yf);
    OK(dsnpu_expert_ffn(ctx, s, DSNPU_DTYPE_F32, dxf, dwg, dwu, dwd, dcs, dyf, 4, G, HD, I, DSNPU_LIST_CUMSUM));
    ACL(acl_sync_stream(s));
    download(yf, dyf, sizeof yf);
    close_to("expert_ffn f32", yf, wantf, 4 * HD, 1e-5f, 1e-4f);
    done_stream(s);
    acl_free(dx), acl_free(dw), acl_free(dg), acl_free(dy);
    acl_free(dxf), acl_free(dwg), acl_free(dwu), acl_free(dwd), acl_free(dcs), acl_free(dyf);
}

/* The per-head product of absorbed MLA on token-major rows: x [T, H, XW] with each head's first K
 * columns the operand, y [T, H, YW] with each head's first N columns written and the rest (sentinels)
 * kept; then a y layout whose rows overlap is refused. */
static void test_grouped_strided(void) {
    enum { T = 3, H = 2, K = 3, XW = 5, N = 4, YW = 6 };
    const float SENTINEL = -7.5f;
    float x[T * H * XW], w[H * N * K], y[T * H * YW], want[T * H * YW];
    fill(x, T * H * XW, 20);
    fill(w, H * N * K, 21);
    for (int i = 0; i < T * H * YW; i++) y[i] = want[i] = SENTINEL;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int n = 0; n < N; n++) {
                double acc = 0;
                for (int k = 0; k < K; k++) acc += (double)x[(t * H + h) * XW + k] * w[(h * N + n) * K + k];
                want[(t * H + h) * YW + n] = (float)acc;
            }
    void *s = new_stream();
    void *dx = dev_upload(x, sizeof x), *dw = dev_upload(w, sizeof w), *dy = dev_upload(y, sizeof y);
    OK(dsnpu_grouped_matmul_strided(ctx, s, DSNPU_DTYPE_F32, dx, dw, dy, H, T, N, K, H * XW, XW, H * YW, YW));
    ACL(acl_sync_stream(s));
    download(y, dy, sizeof y);
    close_to("grouped_matmul_strided f32 (token-major heads, sentinels between rows)", y, want, T * H * YW, 1e-5f,
             1e-5f);
    /* y rows 2 elements apart hold N = 4 values each: they overlap. */
    expect_error("grouped_matmul_strided with overlapping y rows",
                 dsnpu_grouped_matmul_strided(ctx, s, DSNPU_DTYPE_F32, dx, dw, dy, H, T, N, K, H * XW, XW, 2, YW),
                 DSNPU_STATUS_INVALID_ARGUMENT, "overlap");
    done_stream(s);
    acl_free(dx), acl_free(dw), acl_free(dy);
}

static void test_finalize(void) {
    enum { T = 2, K = 2, H = 4, R = 3 };
    float y[R * H], wts[T * K] = {0.25f, 0.75f, 0.5f, 2.0f}, res[T * H], out[T * H], want[T * H];
    int32_t idx[T * K] = {2, 0, -1, 1};
    fill(y, R * H, 18);
    fill(res, T * H, 19);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float acc = 0;
            for (int k = 0; k < K; k++) {
                int r = idx[t * K + k];
                if (r >= 0) acc += wts[t * K + k] * y[r * H + h];
            }
            want[t * H + h] = acc + res[t * H + h];
        }
    void *s = new_stream();
    void *dy = dev_upload(y, sizeof y), *di = dev_upload(idx, sizeof idx), *dw = dev_upload(wts, sizeof wts);
    void *dr = dev_upload(res, sizeof res), *dout = dev_alloc(sizeof out);
    OK(dsnpu_moe_finalize_routing(ctx, s, DSNPU_DTYPE_F32, dy, di, dw, NULL, dr, dout, T, H, K, R));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    close_to("moe_finalize_routing f32 (residual, a dropped pair)", out, want, T * H, 1e-6f, 1e-5f);
    done_stream(s);
    acl_free(dy), acl_free(di), acl_free(dw), acl_free(dr), acl_free(dout);
}

static void test_mla_decode(void) {
    enum { B = 1, S = 1, H = 2, DL = 8, DR = 4, BS = 16, NB = 3, MB = 2, LEN = 20 };
    float qn[B * S * H * DL], qr[B * S * H * DR], lat[NB * BS * DL], rp[NB * BS * DR];
    float out[B * S * H * DL], lse[B * H * S], want_out[B * S * H * DL], want_lse[B * H * S];
    int32_t table[B * MB] = {2, 0}, lens[B] = {LEN};
    const float scale = 0.5f;
    fill(qn, B * S * H * DL, 20);
    fill(qr, B * S * H * DR, 21);
    fill(lat, NB * BS * DL, 22);
    fill(rp, NB * BS * DR, 23);
    for (int h = 0; h < H; h++) {
        float sc[LEN], mx = -INFINITY;
        for (int j = 0; j < LEN; j++) {
            int slot = table[j / BS] * BS + j % BS;
            double d = 0;
            for (int c = 0; c < DL; c++) d += (double)qn[h * DL + c] * lat[slot * DL + c];
            for (int c = 0; c < DR; c++) d += (double)qr[h * DR + c] * rp[slot * DR + c];
            sc[j] = scale * (float)d;
            mx = fmaxf(mx, sc[j]);
        }
        double den = 0;
        for (int j = 0; j < LEN; j++) den += exp(sc[j] - mx);
        for (int c = 0; c < DL; c++) {
            double acc = 0;
            for (int j = 0; j < LEN; j++) {
                int slot = table[j / BS] * BS + j % BS;
                acc += exp(sc[j] - mx) / den * lat[slot * DL + c];
            }
            want_out[h * DL + c] = (float)acc;
        }
        want_lse[h] = mx + (float)log(den);
    }
    void *s = new_stream();
    void *dqn = dev_upload(qn, sizeof qn), *dqr = dev_upload(qr, sizeof qr), *dl = dev_upload(lat, sizeof lat);
    void *drp = dev_upload(rp, sizeof rp), *dt = dev_upload(table, sizeof table), *dn = dev_upload(lens, sizeof lens);
    void *dout = dev_alloc(sizeof out), *dlse = dev_alloc(sizeof lse);
    DsnpuMlaDecodePlan *plan = NULL;
    OK(dsnpu_mla_decode_plan_create(ctx, s, lens, B, &plan));
    OK(dsnpu_mla_decode(ctx, s, DSNPU_DTYPE_F32, dqn, dqr, dl, drp, dt, dn, plan, dout, dlse, B, S, H, DL, DR,
                        BS, NB, MB, scale));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    download(lse, dlse, sizeof lse);
    close_to("mla_decode out f32", out, want_out, B * S * H * DL, 1e-5f, 1e-4f);
    close_to("mla_decode lse f32", lse, want_lse, B * H * S, 1e-5f, 1e-5f);
    expect_error("plan for another batch",
                 dsnpu_mla_decode(ctx, s, DSNPU_DTYPE_F32, dqn, dqr, dl, drp, dt, dn, plan, dout, dlse, B + 1, S,
                                  H, DL, DR, BS, NB, MB, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "plan is for");
    /* A negative batch is named as the negative size it is (it was "the plan is for 1 sequences, not -1"). */
    expect_error("negative batch",
                 dsnpu_mla_decode(ctx, s, DSNPU_DTYPE_F32, dqn, dqr, dl, drp, dt, dn, plan, dout, dlse, -1, S, H, DL,
                                  DR, BS, NB, MB, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`batch` is -1, must be >= 0");
    /* Destroying a misaligned plan frees nothing and says so (it was dropped through: a segfault). */
    dsnpu_mla_decode_plan_destroy((DsnpuMlaDecodePlan *)((char *)plan + 1));
    expect_error("destroying a misaligned plan", DSNPU_STATUS_INVALID_ARGUMENT, DSNPU_STATUS_INVALID_ARGUMENT, "`plan`");
    dsnpu_mla_decode_plan_destroy(plan);
    if (dsnpu_last_error() != NULL) FAIL("destroying a plan left an error message");
    /* A destroyed plan is known to be gone (until another plan happens to get its address): used or
     * destroyed again, it is an error, not a read of freed memory or a double free. */
    expect_error("a plan used after destroy",
                 dsnpu_mla_decode(ctx, s, DSNPU_DTYPE_F32, dqn, dqr, dl, drp, dt, dn, plan, dout, dlse, B, S, H, DL, DR,
                                  BS, NB, MB, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`plan` is not a live plan");
    dsnpu_mla_decode_plan_destroy(plan);
    expect_error("a plan destroyed twice", DSNPU_STATUS_INVALID_ARGUMENT, DSNPU_STATUS_INVALID_ARGUMENT,
                 "`plan` is not a live plan");
    /* The plan made for the query shape gives the same results. */
    plan = NULL;
    OK(dsnpu_mla_decode_plan_create_for_shape(ctx, s, lens, B, DSNPU_DTYPE_F32, S, H, DL, DR, &plan));
    void *dout2 = dev_alloc(sizeof out), *dlse2 = dev_alloc(sizeof lse);
    OK(dsnpu_mla_decode(ctx, s, DSNPU_DTYPE_F32, dqn, dqr, dl, drp, dt, dn, plan, dout2, dlse2, B, S, H, DL, DR,
                        BS, NB, MB, scale));
    ACL(acl_sync_stream(s));
    download(out, dout2, sizeof out);
    download(lse, dlse2, sizeof lse);
    close_to("mla_decode out f32 (shape plan)", out, want_out, B * S * H * DL, 1e-5f, 1e-4f);
    close_to("mla_decode lse f32 (shape plan)", lse, want_lse, B * H * S, 1e-5f, 1e-5f);
    dsnpu_mla_decode_plan_destroy(plan);
    acl_free(dout2), acl_free(dlse2);
    DsnpuMlaDecodePlan *bad = NULL;
    expect_error("shape plan unknown dtype",
                 dsnpu_mla_decode_plan_create_for_shape(ctx, s, lens, B, 7, S, H, DL, DR, &bad),
                 DSNPU_STATUS_INVALID_ARGUMENT, "dtype");
    expect_error("shape plan negative heads",
                 dsnpu_mla_decode_plan_create_for_shape(ctx, s, lens, B, DSNPU_DTYPE_F32, S, -1, DL, DR, &bad),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`heads`");
    done_stream(s);
    acl_free(dqn), acl_free(dqr), acl_free(dl), acl_free(drp), acl_free(dt), acl_free(dn), acl_free(dout), acl_free(dlse);
}

/* The fused cache write: RMSNorm of kv[:, :DL] and interleaved rope of kv[:, DL:] into a paged cache
 * of S slots at slot_mapping (-1 skips a token); the other slots keep their values. */
static void test_mla_cache_write(void) {
    enum { T = 3, DL = 512, DR = 64, S = 32, P = 40 };
    static float kv[T * (DL + DR)], w[DL], lat[S * DL], rop[S * DR], want_l[S * DL], want_r[S * DR];
    static float cs[P * DR / 2], sn[P * DR / 2];
    int32_t pos[T] = {3, 39, 17}, slots[T] = {5, -1, 30};
    fill(kv, T * (DL + DR), 21);
    fill(w, DL, 22);
    fill(lat, S * DL, 23);
    fill(rop, S * DR, 24);
    memcpy(want_l, lat, sizeof lat);
    memcpy(want_r, rop, sizeof rop);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < DR / 2; i++) {
            float ang = (float)p * powf(10000.0f, -2.0f * i / DR);
            cs[p * DR / 2 + i] = cosf(ang);
            sn[p * DR / 2 + i] = sinf(ang);
        }
    for (int t = 0; t < T; t++) {
        if (slots[t] < 0) continue;
        const float *row = kv + t * (DL + DR);
        double ss = 0;
        for (int i = 0; i < DL; i++) ss += (double)row[i] * row[i];
        float inv = (float)(1.0 / sqrt(ss / DL + 1e-6));
        for (int i = 0; i < DL; i++) want_l[slots[t] * DL + i] = row[i] * inv * w[i];
        for (int i = 0; i < DR / 2; i++) {
            float c = cs[pos[t] * DR / 2 + i], sv = sn[pos[t] * DR / 2 + i];
            float a = row[DL + 2 * i], b = row[DL + 2 * i + 1]; /* interleaved pairs */
            want_r[slots[t] * DR + 2 * i] = a * c - b * sv;
            want_r[slots[t] * DR + 2 * i + 1] = b * c + a * sv;
        }
    }
    void *s = new_stream();
    void *dkv = dev_upload(kv, sizeof kv), *dw = dev_upload(w, sizeof w), *dp = dev_upload(pos, sizeof pos);
    void *dc = dev_upload(cs, sizeof cs), *dsn = dev_upload(sn, sizeof sn), *dsl = dev_upload(slots, sizeof slots);
    void *dl = dev_upload(lat, sizeof lat), *dr = dev_upload(rop, sizeof rop);
    OK(dsnpu_mla_cache_write(ctx, s, DSNPU_DTYPE_F32, dkv, dw, dp, dc, dsn, dsl, dl, dr, T, DL, DR, S, P,
                             DSNPU_ROPE_INTERLEAVED, 1e-6f));
    ACL(acl_sync_stream(s));
    download(lat, dl, sizeof lat);
    download(rop, dr, sizeof rop);
    close_to("mla_cache_write latent f32", lat, want_l, S * DL, 1e-5f, 1e-5f);
    close_to("mla_cache_write rope f32", rop, want_r, S * DR, 1e-5f, 1e-5f);
    /* A null cache and a layout code the kernel lacks are refused before anything is queued. */
    expect_error("mla_cache_write null rope_cache",
                 dsnpu_mla_cache_write(ctx, s, DSNPU_DTYPE_F32, dkv, dw, dp, dc, dsn, dsl, dl, NULL, T, DL, DR, S, P,
                                       DSNPU_ROPE_INTERLEAVED, 1e-6f),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`rope_cache`");
    expect_error("mla_cache_write cache aliasing kv",
                 dsnpu_mla_cache_write(ctx, s, DSNPU_DTYPE_F32, dkv, dw, dp, dc, dsn, dsl, dkv, dr, T, DL, DR, 1, P,
                                       DSNPU_ROPE_INTERLEAVED, 1e-6f),
                 DSNPU_STATUS_INVALID_ARGUMENT, "overlaps");
    done_stream(s);
    acl_free(dkv), acl_free(dw), acl_free(dp), acl_free(dc), acl_free(dsn), acl_free(dsl), acl_free(dl), acl_free(dr);
}

/* MLA prefill reference in double: sequence b owns queries cu_q[b]..cu_q[b+1] and keys cu_k[b]..cu_k[b+1];
 * query i of Lq sees keys j <= Lk - Lq + i (a cached prefix of Lk - Lq keys, then causal). */
static void prefill_reference(const float *q, const float *k, const float *v, const int32_t *cu_q,
                              const int32_t *cu_k, int batch, int heads, int dqk, int dv, float scale,
                              float *out, float *lse, int tokens_q) {
    for (int b = 0; b < batch; b++) {
        int lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
        for (int i = 0; i < lq; i++) {
            int t = cu_q[b] + i, seen = lk - lq + i + 1;
            for (int h = 0; h < heads; h++) {
                double sc[64], mx = -INFINITY, den = 0;
                for (int j = 0; j < seen; j++) {
                    const float *kj = k + ((size_t)(cu_k[b] + j) * heads + h) * dqk;
                    const float *qt = q + ((size_t)t * heads + h) * dqk;
                    double d = 0;
                    for (int c = 0; c < dqk; c++) d += (double)qt[c] * kj[c];
                    sc[j] = scale * d;
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j < seen; j++) den += exp(sc[j] - mx);
                for (int c = 0; c < dv; c++) {
                    double acc = 0;
                    for (int j = 0; j < seen; j++)
                        acc += exp(sc[j] - mx) / den * v[((size_t)(cu_k[b] + j) * heads + h) * dv + c];
                    out[((size_t)t * heads + h) * dv + c] = (float)acc;
                }
                lse[(size_t)h * tokens_q + t] = (float)(mx + log(den));
            }
        }
    }
}

/* Prefill in the expanded form (DeepSeek widths: q/k 192, v 128), two heads: two sequences of 3 and 5
 * tokens (f32, then bf16), then the same queries with a cached prefix of 2 and 4 keys (f32). */
static void test_mla_prefill(void) {
    enum { B = 2, H = 2, DQK = 192, DV = 128, TQ = 8, TK = 14 };
    static float q[TQ * H * DQK], k[TK * H * DQK], v[TK * H * DV];
    static float out[TQ * H * DV], lse[H * TQ], want_out[TQ * H * DV], want_lse[H * TQ];
    static uint16_t qb[TQ * H * DQK], kb[TQ * H * DQK], vb[TQ * H * DV], outb[TQ * H * DV];
    const int32_t cu[B + 1] = {0, 3, 8}, cu_k[B + 1] = {0, 5, 14};
    const float scale = 1.0f / sqrtf((float)DQK);
    fill(q, TQ * H * DQK, 30);
    fill(k, TK * H * DQK, 31);
    fill(v, TK * H * DV, 32);
    void *s = new_stream();
    void *dq = dev_upload(q, sizeof q), *dcu = dev_upload(cu, sizeof cu), *dcuk = dev_upload(cu_k, sizeof cu_k);
    void *dk = dev_upload(k, sizeof k), *dv = dev_upload(v, sizeof v);
    void *dout = dev_alloc(sizeof out), *dlse = dev_alloc(sizeof lse);

    /* No prefix: the first TQ keys, cu_k = cu_q. */
    prefill_reference(q, k, v, cu, cu, B, H, DQK, DV, scale, want_out, want_lse, TQ);
    OK(dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, cu, dout, dlse, B, TQ, TQ, H, DQK, DV,
                         scale));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    download(lse, dlse, sizeof lse);
    close_to("mla_prefill out f32 (lens 3, 5)", out, want_out, TQ * H * DV, 1e-5f, 1e-4f);
    close_to("mla_prefill lse f32 (lens 3, 5)", lse, want_lse, H * TQ, 1e-5f, 1e-5f);

    /* bf16: inputs rounded to bf16 here, the reference on the rounded values, the output rounded once. */
    static float qr[TQ * H * DQK], kr[TQ * H * DQK], vr[TQ * H * DV];
    for (int i = 0; i < TQ * H * DQK; i++) qr[i] = from_bf16(qb[i] = to_bf16(q[i]));
    for (int i = 0; i < TQ * H * DQK; i++) kr[i] = from_bf16(kb[i] = to_bf16(k[i]));
    for (int i = 0; i < TQ * H * DV; i++) vr[i] = from_bf16(vb[i] = to_bf16(v[i]));
    prefill_reference(qr, kr, vr, cu, cu, B, H, DQK, DV, scale, want_out, want_lse, TQ);
    void *dqb = dev_upload(qb, sizeof qb), *dkb = dev_upload(kb, sizeof kb), *dvb = dev_upload(vb, sizeof vb);
    void *doutb = dev_alloc(sizeof outb);
    OK(dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_BF16, dqb, dkb, dvb, dcu, dcu, cu, cu, doutb, dlse, B, TQ, TQ, H, DQK,
                         DV, scale));
    ACL(acl_sync_stream(s));
    download(outb, doutb, sizeof outb);
    download(lse, dlse, sizeof lse);
    for (int i = 0; i < TQ * H * DV; i++) out[i] = from_bf16(outb[i]);
    /* bf16 probabilities on the cube (8 significant bits) and the output's own rounding. */
    close_to("mla_prefill out bf16 (lens 3, 5)", out, want_out, TQ * H * DV, 1e-2f, 1e-2f);
    close_to("mla_prefill lse bf16 (lens 3, 5)", lse, want_lse, H * TQ, 1e-3f, 1e-3f);

    /* A cached prefix: sequence 0 has 2 prefix keys + its 3 tokens, sequence 1 has 4 + 5. */
    prefill_reference(q, k, v, cu, cu_k, B, H, DQK, DV, scale, want_out, want_lse, TQ);
    OK(dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcuk, cu, cu_k, dout, dlse, B, TQ, TK, H, DQK, DV,
                         scale));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    download(lse, dlse, sizeof lse);
    close_to("mla_prefill out f32 (prefix 2, 4)", out, want_out, TQ * H * DV, 1e-5f, 1e-4f);
    close_to("mla_prefill lse f32 (prefix 2, 4)", lse, want_lse, H * TQ, 1e-5f, 1e-5f);

    /* Bad arguments are refused before anything is queued. */
    const int32_t INV = DSNPU_STATUS_INVALID_ARGUMENT;
    const int32_t short_k[B + 1] = {0, 2, 8}, ends_early[B + 1] = {0, 3, 7};
    expect_error("mla_prefill null q",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, NULL, dk, dv, dcu, dcu, cu, cu, dout, dlse, B, TQ, TQ,
                                   H, DQK, DV, scale),
                 INV, "`q`");
    expect_error("mla_prefill null host_cu_k",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, NULL, dout, dlse, B, TQ, TQ,
                                   H, DQK, DV, scale),
                 INV, "`host_cu_k`");
    expect_error("mla_prefill unknown dtype",
                 dsnpu_mla_prefill(ctx, s, 5, dq, dk, dv, dcu, dcu, cu, cu, dout, dlse, B, TQ, TQ, H, DQK, DV,
                                   scale),
                 INV, "dtype code 5");
    expect_error("mla_prefill cu_q not ending at tokens_q",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, ends_early, ends_early, dout,
                                   dlse, B, TQ, TQ, H, DQK, DV, scale),
                 INV, "not at the 8 tokens");
    expect_error("mla_prefill fewer keys than queries",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, short_k, dout, dlse, B, TQ,
                                   TQ, H, DQK, DV, scale),
                 INV, "only 2 keys");
    expect_error("mla_prefill zero heads",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, cu, dout, dlse, B, TQ, TQ, 0,
                                   DQK, DV, scale),
                 INV, "`heads` is 0");
    expect_error("mla_prefill out aliasing k",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, cu, dk, dlse, B, TQ, TQ, H,
                                   DQK, DV, scale),
                 INV, "overlaps");
    expect_error("mla_prefill NaN scale",
                 dsnpu_mla_prefill(ctx, s, DSNPU_DTYPE_F32, dq, dk, dv, dcu, dcu, cu, cu, dout, dlse, B, TQ, TQ, H,
                                   DQK, DV, NAN),
                 INV, "not finite");
    done_stream(s);
    acl_free(dq), acl_free(dk), acl_free(dv), acl_free(dcu), acl_free(dcuk), acl_free(dout), acl_free(dlse);
    acl_free(dqb), acl_free(dkb), acl_free(dvb), acl_free(doutb);
}

/* Chunked prefill from the paged cache: sequence 0 has 4 cached tokens then 3 new (7 keys in blocks 2, 0),
 * sequence 1 has 5 new tokens and no prefix (blocks 3, 1); block size 4. The keys are expanded here with
 * kv_b (per head DN key rows then DV value rows) and the expanded prefill's reference is reused. */
static void test_mla_prefill_cached(void) {
    enum { B = 2, H = 2, DN = 16, DR = 16, DV = 16, DLAT = 32, BS = 4, NB = 4, TQ = 8, TK = 12 };
    enum { W = DN + DR, SLOTS = NB * BS };
    static float q[TQ * H * W], lat[SLOTS * DLAT], rp[SLOTS * DR], kvb[H * (DN + DV) * DLAT];
    static float k[TK * H * W], v[TK * H * DV], out[TQ * H * DV], lse[H * TQ], want_out[TQ * H * DV],
        want_lse[H * TQ];
    const int32_t cu_q[B + 1] = {0, 3, 8}, cu_k[B + 1] = {0, 7, 12}, table[B][2] = {{2, 0}, {3, 1}};
    int32_t slots[TK];
    const float scale = 1.0f / sqrtf((float)W);
    fill(q, TQ * H * W, 40);
    fill(lat, SLOTS * DLAT, 41);
    fill(rp, SLOTS * DR, 42);
    fill(kvb, H * (DN + DV) * DLAT, 43);
    for (int i = 0; i < H * (DN + DV) * DLAT; i++) kvb[i] *= 0.3f;
    for (int b = 0, j = 0; b < B; b++)
        for (int p = 0; p < cu_k[b + 1] - cu_k[b]; p++, j++) slots[j] = table[b][p / BS] * BS + p % BS;
    for (int j = 0; j < TK; j++)
        for (int h = 0; h < H; h++) {
            const float *c = lat + (size_t)slots[j] * DLAT;
            for (int r = 0; r < DN + DV; r++) {
                double acc = 0;
                for (int e = 0; e < DLAT; e++) acc += (double)kvb[((size_t)h * (DN + DV) + r) * DLAT + e] * c[e];
                if (r < DN) k[((size_t)j * H + h) * W + r] = (float)acc;
                else v[((size_t)j * H + h) * DV + r - DN] = (float)acc;
            }
            for (int r = 0; r < DR; r++) k[((size_t)j * H + h) * W + DN + r] = rp[(size_t)slots[j] * DR + r];
        }
    prefill_reference(q, k, v, cu_q, cu_k, B, H, W, DV, scale, want_out, want_lse, TQ);
    void *s = new_stream();
    void *dq = dev_upload(q, sizeof q), *dl = dev_upload(lat, sizeof lat), *dr = dev_upload(rp, sizeof rp);
    void *dw = dev_upload(kvb, sizeof kvb), *dsl = dev_upload(slots, sizeof slots);
    void *dcq = dev_upload(cu_q, sizeof cu_q), *dck = dev_upload(cu_k, sizeof cu_k);
    void *dout = dev_alloc(sizeof out), *dlse = dev_alloc(sizeof lse);
    OK(dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, dw, dsl, dcq, dck, cu_q, cu_k, dout, dlse, B,
                                TQ, TK, H, DN, DR, DV, DLAT, SLOTS, scale));
    ACL(acl_sync_stream(s));
    download(out, dout, sizeof out);
    download(lse, dlse, sizeof lse);
    close_to("mla_prefill_cached out f32 (prefix 4, 0)", out, want_out, TQ * H * DV, 1e-5f, 1e-4f);
    close_to("mla_prefill_cached lse f32 (prefix 4, 0)", lse, want_lse, H * TQ, 1e-5f, 1e-5f);
    expect_error("mla_prefill_cached null kv_b",
                 dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, NULL, dsl, dcq, dck, cu_q, cu_k, dout,
                                          dlse, B, TQ, TK, H, DN, DR, DV, DLAT, SLOTS, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`kv_b`");
    expect_error("mla_prefill_cached cu_k not ending at tokens_k",
                 dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, dw, dsl, dcq, dck, cu_q, cu_k, dout,
                                          dlse, B, TQ, TK - 1, H, DN, DR, DV, DLAT, SLOTS, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "cu_k ends at 12");
    /* Sizes whose products overflow only in the query row width (no queries) or in the workspace the
     * keys are expanded into: refused as arguments, not a caught overflow (DSNPU_STATUS_INTERNAL). */
    const int32_t no_q[B + 1] = {0, 0, 0};
    expect_error("mla_prefill_cached heads * (dn + dr) overflowing",
                 dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, dw, dsl, dcq, dck, no_q, cu_k, dout,
                                          dlse, B, 0, TK, 1LL << 32, DN, 1LL << 32, DV, DLAT, SLOTS, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "heads * (dn + dr) overflows");
    /* 2^32 key slots and a latent width of 2^32: the key slots and kv_b at addresses past both outputs,
     * so that only the workspace is wrong (never read: the call must fail before queuing anything). */
    const uintptr_t ends = (uintptr_t)dout > (uintptr_t)dlse ? (uintptr_t)dout : (uintptr_t)dlse;
    const void *far_slots = (const void *)(ends + sizeof out + sizeof lse);
    const void *far_kvb = (const void *)(ends + sizeof out + sizeof lse + (4ULL << 32));
    expect_error("mla_prefill_cached workspace overflowing",
                 dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, far_kvb, far_slots, dcq, dck, cu_q,
                                          cu_k, dout, dlse, B, TQ, 1LL << 32, H, DN, DR, DV, 1LL << 32, 0, scale),
                 DSNPU_STATUS_INVALID_ARGUMENT, "workspace");
    done_stream(s);
    acl_free(dq), acl_free(dl), acl_free(dr), acl_free(dw), acl_free(dsl), acl_free(dcq), acl_free(dck);
    acl_free(dout), acl_free(dlse);
}

static void expect_error(const char *what, int32_t st, int32_t want, const char *needle) {
    const char *msg = dsnpu_last_error();
    if (st != want) FAIL("%s: status %s, want %s (%s)", what, dsnpu_status_name(st), dsnpu_status_name(want), msg ? msg : "");
    if (!msg || !strstr(msg, needle)) FAIL("%s: message %s lacks \"%s\"", what, msg ? msg : "(null)", needle);
    checks++;
    printf("ok rejects %s: %s\n", what, msg);
}

static void test_bad_arguments(void) {
    void *s = new_stream();
    float host[64] = {0};
    void *a = dev_upload(host, sizeof host), *b = dev_upload(host, sizeof host), *c = dev_alloc(sizeof host);
    const int32_t INV = DSNPU_STATUS_INVALID_ARGUMENT;
    expect_error("null x", dsnpu_rms_norm(ctx, s, DSNPU_DTYPE_F32, NULL, b, c, 2, 8, 1e-6f), INV, "`x`");
    expect_error("null context", dsnpu_rms_norm(NULL, s, DSNPU_DTYPE_F32, a, b, c, 2, 8, 1e-6f), INV, "`ctx`");
    expect_error("null stream", dsnpu_rms_norm(ctx, NULL, DSNPU_DTYPE_F32, a, b, c, 2, 8, 1e-6f), INV, "`stream`");
    expect_error("unknown dtype", dsnpu_silu_mul(ctx, s, 7, a, c, 2, 4), INV, "dtype code 7");
    expect_error("negative rows", dsnpu_silu_mul(ctx, s, DSNPU_DTYPE_F32, a, c, -1, 4), INV, "`rows` is -1");
    expect_error("zero width", dsnpu_rms_norm(ctx, s, DSNPU_DTYPE_F32, a, b, c, 2, 0, 1e-6f), INV, "invalid shape");
    expect_error("output aliasing its input", dsnpu_rms_norm(ctx, s, DSNPU_DTYPE_F32, a, b, a, 2, 8, 1e-6f), INV, "overlaps");
    expect_error("top_k > experts", dsnpu_moe_gating_topk(ctx, s, DSNPU_DTYPE_F32, a, NULL, c, b, 1, 4, 5, 1, 1, DSNPU_SCORE_SOFTMAX, 0, 1.0f), INV, "top_k 5 > experts 4");
    expect_error("unknown rope layout", dsnpu_rope(ctx, s, DSNPU_DTYPE_F32, a, b, b, b, c, 1, 1, 8, 1, 9), INV, "rope layout code 9");
    expect_error("unknown list type", dsnpu_grouped_matmul(ctx, s, DSNPU_DTYPE_F32, a, b, b, c, 2, 1, 2, 2, 3), INV, "list type code 3");
    expect_error("active range past the experts", dsnpu_moe_init_routing(ctx, s, DSNPU_DTYPE_F32, a, b, c, c, c, 1, 1, 1, 4, 0, 5, DSNPU_LIST_COUNT), INV, "active experts 0..5");
    expect_error("size overflow", dsnpu_linear(ctx, s, DSNPU_DTYPE_F32, a, b, NULL, c, 1LL << 40, 1LL << 40, 1), INV, "overflows");
    /* Host arrays and handles the library dereferences: a length past what one allocation can hold
     * and misaligned pointers are refused, not read (both aborted debug builds). */
    const int32_t lens[2] = {4, 4};
    DsnpuMlaDecodePlan *plan = NULL;
    expect_error("a host list longer than memory", dsnpu_mla_decode_plan_create(ctx, s, lens, INT64_MAX, &plan), INV, "one allocation can hold");
    expect_error("a misaligned host list", dsnpu_mla_decode_plan_create(ctx, s, (const int32_t *)((const char *)lens + 1), 1, &plan), INV, "`host_seq_lens`");
    expect_error("a misaligned out pointer", dsnpu_mla_decode_plan_create(ctx, s, lens, 2, (DsnpuMlaDecodePlan **)((char *)&plan + 1)), INV, "not aligned");
    /* A failed create stores NULL: the handle a caller then destroys (or passes on) is a no-op (or an
     * error), never the garbage its variable held. */
    DsnpuMlaDecodePlan *stale_plan = (DsnpuMlaDecodePlan *)&plan;
    const int32_t negative[1] = {-1};
    expect_error("a negative sequence length", dsnpu_mla_decode_plan_create(ctx, s, negative, 1, &stale_plan), INV, "negative");
    if (stale_plan != NULL) FAIL("a failed plan create left %p in *out", (void *)stale_plan);
    DsnpuContext *stale_ctx = (DsnpuContext *)&plan;
    expect_error("a device that does not exist", dsnpu_context_create(99, &stale_ctx), DSNPU_STATUS_DEVICE, "device 99");
    if (stale_ctx != NULL) FAIL("a failed context create left %p in *out", (void *)stale_ctx);
    expect_error("a misaligned context", dsnpu_silu_mul((const DsnpuContext *)((const char *)ctx + 1), s, DSNPU_DTYPE_F32, a, c, 2, 4), INV, "`ctx`");
    /* A failure leaves the stream usable: a good call on it still succeeds. */
    OK(dsnpu_silu_mul(ctx, s, DSNPU_DTYPE_F32, a, c, 2, 4));
    done_stream(s);
    acl_free(a), acl_free(b), acl_free(c);
}

/* "1,2,3" -> ids; returns the count. */
static int parse_ids(const char *text, int32_t *ids, int cap) {
    int n = 0;
    for (const char *p = text; *p && n < cap;) {
        ids[n++] = (int32_t)strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
    }
    return n;
}

/* One step of `e`, expecting `live` sequences; their tokens by id into tokens_by_id. */
static void step_into(DsnpuEngine *e, int live, int32_t *tokens_by_id, int *counts) {
    uint64_t ids[8];
    int32_t tokens[8];
    int64_t n = -1;
    OK(dsnpu_engine_step(e, ids, tokens, 8, &n));
    if (n != live) FAIL("step returned %lld tokens, want %d", (long long)n, live);
    for (int i = 0; i < n; i++) {
        if (i > 0 && ids[i] <= ids[i - 1]) FAIL("step ids out of order");
        tokens_by_id[ids[i] * 16 + counts[ids[i]]++] = tokens[i];
    }
}

/* The model engine on the tiny checkpoint named by DSNPU_TEST_CHECKPOINT: a prompt alone and in a
 * batch others join and leave gives the greedy ids of the CPU model (DSNPU_TEST_GENERATED, computed
 * by the Rust harness), then the engine's errors. */
static void test_engine(void) {
    const char *dir = getenv("DSNPU_TEST_CHECKPOINT");
    const char *prompt_text = getenv("DSNPU_TEST_PROMPT");
    const char *want_text = getenv("DSNPU_TEST_GENERATED");
    if (!dir || !prompt_text || !want_text) FAIL("DSNPU_TEST_CHECKPOINT/PROMPT/GENERATED are not set");
    int32_t prompt[64], want[16];
    const int np = parse_ids(prompt_text, prompt, 64), nw = parse_ids(want_text, want, 16);
    DsnpuEngineOptions o;
    OK(dsnpu_engine_options_default(&o));
    if (o.num_blocks != 64 || o.block_size != 16 || o.dtype != DSNPU_DTYPE_F32 || o.temperature != 0.0f)
        FAIL("engine option defaults");
    o.num_blocks = 16;
    o.block_size = 4;
    DsnpuEngine *e = NULL;
    OK(dsnpu_engine_load(dir, &o, &e));
    int64_t vocab = 0, live = -1, free_blocks = -1;
    OK(dsnpu_engine_vocab_size(e, &vocab));
    if (vocab <= 0) FAIL("vocab size %lld", (long long)vocab);

    /* Alone: sequence 0. */
    int32_t got[8 * 16];
    int counts[8] = {0};
    uint64_t a = 99;
    OK(dsnpu_engine_add_sequence(e, prompt, np, &a));
    if (a != 0) FAIL("first sequence id %llu", (unsigned long long)a);
    for (int t = 0; t < nw; t++) step_into(e, 1, got, counts);
    for (int t = 0; t < nw; t++)
        if (got[0 * 16 + t] != want[t]) FAIL("alone: token %d is %d, want %d", t, got[t], want[t]);
    OK(dsnpu_engine_remove_sequence(e, a));
    checks++;
    printf("ok engine: a prompt alone gives the CPU model's %d greedy ids\n", nw);

    /* In a batch: sequence 1 (the prompt), sequence 2 joins after two steps and leaves first. */
    const int32_t other[2] = {7, 7};
    uint64_t b = 0, c = 0;
    OK(dsnpu_engine_add_sequence(e, prompt, np, &b));
    step_into(e, 1, got, counts);
    step_into(e, 1, got, counts);
    OK(dsnpu_engine_add_sequence(e, other, 2, &c));
    OK(dsnpu_engine_live_count(e, &live));
    if (live != 2) FAIL("live %lld, want 2", (long long)live);
    while (counts[b] < nw) {
        step_into(e, counts[c] < 3 ? 2 : 1, got, counts);
        if (counts[c] == 3) {
            OK(dsnpu_engine_remove_sequence(e, c));
            counts[c]++; /* left */
        }
    }
    for (int t = 0; t < nw; t++)
        if (got[b * 16 + t] != want[t]) FAIL("batched: token %d is %d, want %d", t, got[b * 16 + t], want[t]);
    OK(dsnpu_engine_remove_sequence(e, b));
    OK(dsnpu_engine_live_count(e, &live));
    OK(dsnpu_engine_free_blocks(e, &free_blocks));
    if (live != 0 || free_blocks != 16) FAIL("after removals: live %lld, free %lld", (long long)live, (long long)free_blocks);
    checks++;
    printf("ok engine: the same ids with a sequence joining and leaving\n");

    /* Errors. */
    const int32_t INV = DSNPU_STATUS_INVALID_ARGUMENT;
    uint64_t ids[1];
    int32_t tokens[1];
    int64_t n = -1;
    expect_error("a step with no live sequence", dsnpu_engine_step(e, ids, tokens, 1, &n), INV, "live sequence");
    expect_error("an empty prompt", dsnpu_engine_add_sequence(e, prompt, 0, &a), INV, "empty prompt");
    const int32_t past = (int32_t)vocab;
    expect_error("an id past the vocabulary", dsnpu_engine_add_sequence(e, &past, 1, &a), INV, "invalid input");
    expect_error("an unknown sequence", dsnpu_engine_remove_sequence(e, 12345), INV, "unknown sequence");
    expect_error("a null engine", dsnpu_engine_step(NULL, ids, tokens, 1, &n), INV, "`engine`");
    expect_error("a prompt longer than memory", dsnpu_engine_add_sequence(e, prompt, INT64_MAX, &a), INV, "one allocation can hold");
    expect_error("a misaligned prompt", dsnpu_engine_add_sequence(e, (const int32_t *)((const char *)prompt + 1), 1, &a), INV, "`ids`");
    expect_error("a misaligned engine", dsnpu_engine_live_count((DsnpuEngine *)((char *)e + 1), &live), INV, "`engine`");
    expect_error("a misaligned step buffer", dsnpu_engine_step(e, (uint64_t *)((char *)ids + 4), tokens, 1, &n), INV, "not aligned");
    expect_error("destroying a misaligned engine", dsnpu_engine_destroy((DsnpuEngine *)((char *)e + 1)), INV, "`engine`");
    OK(dsnpu_engine_add_sequence(e, prompt, np, &a));
    expect_error("too small a step buffer", dsnpu_engine_step(e, ids, tokens, 0, &n), INV, "capacity");
    if (n != 1) FAIL("too small a step buffer: out_count %lld, want 1", (long long)n);
    OK(dsnpu_engine_remove_sequence(e, a));
    OK(dsnpu_engine_destroy(e));
    o.temperature = -1.0f;
    expect_error("a negative temperature", dsnpu_engine_load(dir, &o, &e), INV, "temperature");
    o.temperature = 0.0f;
    o.dtype = DSNPU_DTYPE_F16;
    expect_error("an f16 engine", dsnpu_engine_load(dir, &o, &e), INV, "dtype");
    e = (DsnpuEngine *)&o; /* what a failed load must not leave behind */
    expect_error("a missing checkpoint", dsnpu_engine_load("/nonexistent/checkpoint", NULL, &e), INV, "/nonexistent/checkpoint");
    if (e != NULL) FAIL("a failed engine load left %p in *out", (void *)e);
    /* A path that is not UTF-8 is a path (Linux paths are bytes): the checkpoint through a symlink named
     * "ckpt-\xff" loads (it was refused: "`path` is not UTF-8"). */
    char tmp[] = "/tmp/dsnpu-c-test-XXXXXX", link_path[64];
    if (!mkdtemp(tmp)) FAIL("mkdtemp");
    snprintf(link_path, sizeof link_path, "%s/ckpt-\xff", tmp);
    char real[4096];
    if (!realpath(dir, real) || symlink(real, link_path) != 0) FAIL("symlink %s", link_path);
    o.dtype = DSNPU_DTYPE_F32;
    OK(dsnpu_engine_load(link_path, &o, &e));
    OK(dsnpu_engine_destroy(e));
    unlink(link_path);
    rmdir(tmp);
    checks++;
    printf("ok engine: a checkpoint path that is not UTF-8 loads\n");
    /* 2^30 cache slots (hundreds of GB): the cache does not fit, the same status as a kernel's workspace
     * that does not (test_out_of_memory). */
    o.num_blocks = 1ULL << 20;
    o.block_size = 1ULL << 10;
    expect_error("a paged cache larger than the device", dsnpu_engine_load(dir, &o, &e), DSNPU_STATUS_OUT_OF_MEMORY,
                 "lower num_blocks or block_size");
    if (e != NULL) FAIL("a failed engine load left %p in *out", (void *)e);
    o.block_size = 4;
    /* Two blocks of 4 tokens: a 7-token prompt fits, then outgrows the cache on its second token. */
    o.dtype = DSNPU_DTYPE_F32;
    o.num_blocks = 2;
    OK(dsnpu_engine_load(dir, &o, &e));
    const int32_t seven[7] = {1, 2, 3, 4, 5, 6, 7}, nine[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    /* Nine tokens need three blocks: refused when added rather than failing every step. */
    expect_error("a prompt larger than the cache", dsnpu_engine_add_sequence(e, nine, 9, &a), INV, "the cache has 2 in all");
    OK(dsnpu_engine_add_sequence_seeded(e, seven, 7, 3, &a));
    OK(dsnpu_engine_step(e, ids, tokens, 1, &n));
    OK(dsnpu_engine_step(e, ids, tokens, 1, &n));
    expect_error("a sequence outgrowing the cache", dsnpu_engine_step(e, ids, tokens, 1, &n), DSNPU_STATUS_OUT_OF_BLOCKS, "out of blocks");
    OK(dsnpu_engine_remove_sequence(e, a));
    OK(dsnpu_engine_free_blocks(e, &free_blocks));
    if (free_blocks != 2) FAIL("after the failed step: free %lld, want 2", (long long)free_blocks);
    OK(dsnpu_engine_destroy(e));
    OK(dsnpu_engine_destroy(NULL));
    expect_error("an engine used after destroy", dsnpu_engine_live_count(e, &live), INV, "`engine` is not a live engine");
    expect_error("an engine destroyed twice", dsnpu_engine_destroy(e), INV, "`engine` is not a live engine");
}

/* Run alone on a device of DSNPU_SIM_MEM_BYTES (the harness gives a small one): a kernel whose workspace
 * does not fit and a checkpoint whose weights do not fit must fail with the same status,
 * DSNPU_STATUS_OUT_OF_MEMORY (they were DSNPU_STATUS_DEVICE and DSNPU_STATUS_UNSUPPORTED). */
static void test_out_of_memory(void) {
    /* mla_prefill_cached gathers the latent rows of its TK keys into a workspace of TK * DLAT floats
     * (512 KiB), before its other workspaces: more than the device has, while every input is small. */
    enum { H = 4, DN = 16, DR = 16, DV = 16, DLAT = 32, TQ = 1, TK = 4096, SLOTS = 1 };
    static float q[TQ * H * (DN + DR)], lat[SLOTS * DLAT], rp[SLOTS * DR], kvb[H * (DN + DV) * DLAT];
    static int32_t slots[TK]; /* all slot 0 */
    const int32_t cu_q[2] = {0, TQ}, cu_k[2] = {0, TK};
    void *s = new_stream();
    void *dq = dev_upload(q, sizeof q), *dl = dev_upload(lat, sizeof lat), *dr = dev_upload(rp, sizeof rp);
    void *dw = dev_upload(kvb, sizeof kvb), *dsl = dev_upload(slots, sizeof slots);
    void *dcq = dev_upload(cu_q, sizeof cu_q), *dck = dev_upload(cu_k, sizeof cu_k);
    void *dout = dev_alloc(TQ * H * DV * sizeof(float)), *dlse = dev_alloc(H * TQ * sizeof(float));
    const int32_t kernel_status =
        dsnpu_mla_prefill_cached(ctx, s, DSNPU_DTYPE_F32, dq, dl, dr, dw, dsl, dcq, dck, cu_q, cu_k, dout, dlse, 1,
                                 TQ, TK, H, DN, DR, DV, DLAT, SLOTS, 1.0f);
    expect_error("a kernel workspace larger than the device", kernel_status, DSNPU_STATUS_OUT_OF_MEMORY,
                 "out of memory on device 0");
    done_stream(s);
    acl_free(dq), acl_free(dl), acl_free(dr), acl_free(dw), acl_free(dsl), acl_free(dcq), acl_free(dck);
    acl_free(dout), acl_free(dlse);

    const char *dir = getenv("DSNPU_TEST_CHECKPOINT");
    if (!dir) FAIL("DSNPU_TEST_CHECKPOINT is not set");
    DsnpuEngineOptions o;
    OK(dsnpu_engine_options_default(&o));
    DsnpuEngine *e = (DsnpuEngine *)&o;
    const int32_t engine_status = dsnpu_engine_load(dir, &o, &e);
    expect_error("weights larger than the device", engine_status, DSNPU_STATUS_OUT_OF_MEMORY, "does not fit");
    if (e != NULL) FAIL("a failed engine load left %p in *out", (void *)e);
    if (kernel_status != engine_status)
        FAIL("out of memory: the kernel returned %s, the engine %s", dsnpu_status_name(kernel_status),
             dsnpu_status_name(engine_status));
    checks++;
    printf("ok out of memory: a kernel and the engine both return %s\n", dsnpu_status_name(engine_status));
}

int main(void) {
    const char *path = getenv("DSNPU_ACL_LIB");
    if (!path) FAIL("DSNPU_ACL_LIB is not set");
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) FAIL("dlopen %s: %s", path, dlerror());
    acl_init = (acl_init_t)sym(lib, "aclInit");
    acl_set_device = (acl_set_device_t)sym(lib, "aclrtSetDevice");
    acl_create_stream = (acl_create_stream_t)sym(lib, "aclrtCreateStream");
    acl_destroy_stream = (acl_destroy_stream_t)sym(lib, "aclrtDestroyStream");
    acl_sync_stream = (acl_sync_stream_t)sym(lib, "aclrtSynchronizeStream");
    acl_malloc = (acl_malloc_t)sym(lib, "aclrtMalloc");
    acl_free = (acl_free_t)sym(lib, "aclrtFree");
    acl_memcpy = (acl_memcpy_t)sym(lib, "aclrtMemcpy");
    ACL(acl_init(NULL));
    ACL(acl_set_device(0));
    OK(dsnpu_context_create(0, &ctx));
    if (getenv("DSNPU_TEST_OUT_OF_MEMORY")) {
        test_out_of_memory();
        OK(dsnpu_context_destroy(ctx));
        printf("all %d checks passed\n", checks);
        return 0;
    }
    test_rms_norm();
    test_add_rms_norm();
    test_rope();
    test_silu_mul();
    test_linear();
    test_gating();
    test_init_routing();
    test_grouped();
    test_grouped_strided();
    test_finalize();
    test_mla_decode();
    test_mla_cache_write();
    test_mla_prefill();
    test_mla_prefill_cached();
    test_bad_arguments();
    test_engine();
    OK(dsnpu_context_destroy(ctx));
    float nothing[4];
    expect_error("a context used after destroy", dsnpu_silu_mul(ctx, nothing, DSNPU_DTYPE_F32, nothing, nothing, 1, 1),
                 DSNPU_STATUS_INVALID_ARGUMENT, "`ctx` is not a live context");
    expect_error("a context destroyed twice", dsnpu_context_destroy(ctx), DSNPU_STATUS_INVALID_ARGUMENT,
                 "`ctx` is not a live context");
    printf("all %d checks passed\n", checks);
    return 0;
}
