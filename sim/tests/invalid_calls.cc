/*
 * Invalid and adversarial AscendCL/HCCL calls against the simulator, through the vendor headers
 * (torch-npu's acl/acl.h and hccl/hccl.h, fetched by scripts/fetch-ascend-headers.sh) and linked
 * against libdsnpu_sim.so like an application linked against libascendcl.so.
 *
 * C-style code compiled as C++: hccl_types.h sizes its arrays with `const uint32_t` constants,
 * which only C++ accepts.
 *
 * Every group runs in a forked child (its own aclInit), under an alarm: a crash or a hang is
 * attributed to its group and the other groups still run. Each check compares a call's return
 * code with the code AscendCL/HCCL documents; a call that returns 0 where an error is expected is
 * counted as a silent success. The parent prints one line per group and a TOTAL line, and exits 0
 * only when there were no failures, crashes or hangs.
 *
 * usage: invalid_calls <test kernel binary (sim/testdata/test_kernels.c built)>
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "third_party/acl/inc/acl/acl.h"
#include "third_party/hccl/inc/hccl/hccl.h"

/* Seconds a group may run before it counts as hung. */
#define GROUP_ALARM_SECONDS 60

struct Counts {
    int checks;
    int failures;
    int silent;
};

/* Shared with the parent, so counts survive a child that crashes. */
static struct Counts *g_counts;
static const char *g_kernels;

static void check(const char *what, long got, long want, int line) {
    g_counts->checks++;
    if (got == want) return;
    g_counts->failures++;
    if (got == 0) g_counts->silent++;
    const char *msg = aclGetRecentErrMsg();
    printf("  FAIL line %d: %s returned %ld, expected %ld%s%s%s\n", line, what, got, want,
           got == 0 ? " (silent success)" : "", msg ? ": " : "", msg ? msg : "");
    fflush(stdout);
}

static void check_true(const char *what, int ok, int line) {
    g_counts->checks++;
    if (ok) return;
    g_counts->failures++;
    printf("  FAIL line %d: %s\n", line, what);
    fflush(stdout);
}

#define EXPECT(call, want) check(#call, (long)(call), (long)(want), __LINE__)
#define EXPECT_TRUE(cond) check_true(#cond, (cond) ? 1 : 0, __LINE__)
#define MUST(call)                                                                       \
    do {                                                                                 \
        long rc_ = (long)(call);                                                         \
        if (rc_ != 0) {                                                                  \
            printf("  setup failed line %d: %s returned %ld\n", __LINE__, #call, rc_); \
            fflush(stdout);                                                              \
            g_counts->failures++;                                                        \
            return;                                                                      \
        }                                                                                \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const char *tmp_dir(void) {
    const char *t = getenv("TMPDIR");
    return (t && *t) ? t : "/tmp";
}

/* Files in the temporary directory whose name starts with `prefix`. */
static int count_tmp_files(const char *prefix) {
    DIR *d = opendir(tmp_dir());
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    }
    closedir(d);
    return n;
}

/* A temporary file holding `len` bytes of `data`; its path is written to `path`. */
static int write_tmp(char *path, size_t cap, const char *tag, const void *data, size_t len) {
    snprintf(path, cap, "%s/dsnpu-invalid-calls-%d-%s-XXXXXX", tmp_dir(), (int)getpid(), tag);
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    const char *p = (const char *)data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    return 0;
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* ------------------------------------------------------------------------------------------- */

static void group_init(void) {
    /* Before aclInit every call is ACL_ERROR_UNINITIALIZE. */
    void *p = NULL;
    EXPECT(aclrtMalloc(&p, 64, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_UNINITIALIZE);
    EXPECT(aclrtSetDevice(0), ACL_ERROR_UNINITIALIZE);
    EXPECT(aclFinalize(), ACL_ERROR_UNINITIALIZE);

    /* Configuration files: CANN wants a regular JSON file (json_parser.cpp). */
    EXPECT(aclInit("/nonexistent/acl.json"), ACL_ERROR_INVALID_FILE);
    EXPECT(aclInit(tmp_dir()), ACL_ERROR_INVALID_FILE); /* a directory */
    EXPECT(aclInit("/dev/null"), ACL_ERROR_INVALID_FILE); /* a character device */
    char path[512];
    const char text[] = "this is not json";
    if (write_tmp(path, sizeof path, "text", text, sizeof text - 1) == 0) {
        EXPECT(aclInit(path), ACL_ERROR_PARSE_FILE);
        unlink(path);
    }
    const char cut[] = "{\"dump\": {\"dump_list\": [";
    if (write_tmp(path, sizeof path, "cut", cut, sizeof cut - 1) == 0) {
        EXPECT(aclInit(path), ACL_ERROR_PARSE_FILE);
        unlink(path);
    }
    char deep[64] = {0};
    for (int i = 0; i < 12; i++) strcat(deep, "[");
    for (int i = 0; i < 12; i++) strcat(deep, "]");
    if (write_tmp(path, sizeof path, "deep", deep, strlen(deep)) == 0) {
        EXPECT(aclInit(path), ACL_ERROR_PARSE_FILE);
        unlink(path);
    }
    /* A FIFO must be rejected without blocking in open(). */
    snprintf(path, sizeof path, "%s/dsnpu-invalid-calls-%d-fifo", tmp_dir(), (int)getpid());
    if (mkfifo(path, 0600) == 0) {
        EXPECT(aclInit(path), ACL_ERROR_INVALID_FILE);
        unlink(path);
    }
    /* A valid empty JSON object, then once only. */
    const char empty[] = "{}";
    if (write_tmp(path, sizeof path, "ok", empty, sizeof empty - 1) == 0) {
        EXPECT(aclInit(path), ACL_SUCCESS);
        unlink(path);
    }
    EXPECT(aclInit(NULL), ACL_ERROR_REPEAT_INITIALIZE);
    EXPECT(aclFinalize(), ACL_SUCCESS);
    EXPECT(aclFinalize(), ACL_ERROR_REPEAT_FINALIZE);
    EXPECT(aclrtSetDevice(0), ACL_ERROR_UNINITIALIZE);
    EXPECT(aclInit(NULL), ACL_ERROR_REPEAT_INITIALIZE);
}

static void group_device(void) {
    MUST(aclInit(NULL));
    int32_t dev = -1;
    uint32_t count = 0;
    EXPECT(aclrtGetDevice(&dev), ACL_ERROR_RT_CONTEXT_NULL);
    EXPECT(aclrtSetDevice(-1), ACL_ERROR_RT_INVALID_DEVICEID);
    EXPECT(aclrtSetDevice(1 << 20), ACL_ERROR_RT_INVALID_DEVICEID);
    EXPECT(aclrtResetDevice(-7), ACL_ERROR_RT_INVALID_DEVICEID);
    EXPECT(aclrtGetDeviceCount(NULL), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtGetDeviceCount(&count));
    EXPECT(aclrtSetDevice((int32_t)count), ACL_ERROR_RT_INVALID_DEVICEID);
    MUST(aclrtSetDevice(0));
    EXPECT(aclrtGetDevice(NULL), ACL_ERROR_INVALID_PARAM);
    aclrtContext ctx = NULL;
    EXPECT(aclrtCreateContext(NULL, 0), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtCreateContext(&ctx, 99), ACL_ERROR_RT_INVALID_DEVICEID);
    EXPECT(aclrtGetCurrentContext(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtSetCurrentContext((aclrtContext)(uintptr_t)0xdead0), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtDestroyContext((aclrtContext)(uintptr_t)0xdead0), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtDestroyContext(NULL), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtCreateContext(&ctx, 0));
    MUST(aclrtDestroyContext(ctx));
    EXPECT(aclrtDestroyContext(ctx), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtSetCurrentContext(ctx), ACL_ERROR_RT_INVALID_HANDLE);
    int32_t a, b, c;
    EXPECT(aclrtGetVersion(NULL, &b, &c), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtGetVersion(&a, &b, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT_TRUE(aclrtGetSocName() != NULL);
    int64_t cap = 0;
    EXPECT(aclGetDeviceCapability(0, ACL_DEVICE_INFO_AI_CORE_NUM, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclGetDeviceCapability(count, ACL_DEVICE_INFO_AI_CORE_NUM, &cap), ACL_ERROR_RT_INVALID_DEVICEID);
    EXPECT(aclGetDeviceCapability(0, ACL_DEVICE_INFO_UNDEFINED, &cap), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclGetDeviceCapability(0, (aclDeviceInfo)7, &cap), ACL_ERROR_INVALID_PARAM);
    MUST(aclGetDeviceCapability(0, ACL_DEVICE_INFO_VECTOR_CORE_NUM, &cap));
    EXPECT_TRUE(cap > 0);
}

static void group_memory(void) {
    MUST(aclInit(NULL));
    MUST(aclrtSetDevice(0));
    void *p = NULL;
    void *d = NULL;
    void *h = NULL;
    char host[256];
    size_t free_b = 0, total_b = 0;
    EXPECT(aclrtMalloc(NULL, 64, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMalloc(&p, 0, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMalloc(&p, SIZE_MAX, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_MEMORY_ALLOCATION);
    EXPECT(aclrtMalloc(&p, SIZE_MAX - 40, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_MEMORY_ALLOCATION);
    EXPECT(aclrtGetMemInfo(ACL_HBM_MEM, NULL, &total_b), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtGetMemInfo((aclrtMemAttr)999, &free_b, &total_b), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtGetMemInfo(ACL_HBM_MEM, &free_b, &total_b));
    EXPECT_TRUE(free_b <= total_b);
    /* Past what the device reports free: the OOM code, promptly. */
    double t0 = now_s();
    EXPECT(aclrtMalloc(&p, free_b + (1u << 20), ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_MEMORY_ALLOCATION);
    EXPECT_TRUE(now_s() - t0 < 1.0);
    /* Two 14 GiB allocations: each succeeds or fails with 207001 within a second, and what
     * aclrtGetMemInfo reported free decides which. */
    const size_t big = (size_t)14 << 30;
    void *big_ptr[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        size_t f = 0, t = 0;
        MUST(aclrtGetMemInfo(ACL_HBM_MEM, &f, &t));
        t0 = now_s();
        aclError rc = aclrtMalloc(&big_ptr[i], big, ACL_MEM_MALLOC_HUGE_FIRST);
        double took = now_s() - t0;
        printf("  14 GiB allocation %d: code %d in %.3f s (%zu bytes reported free)\n", i + 1, rc, took, f);
        EXPECT_TRUE(took < 1.0);
        EXPECT(rc, f >= big + 32 ? ACL_SUCCESS : ACL_ERROR_RT_MEMORY_ALLOCATION);
        if (rc != ACL_SUCCESS) big_ptr[i] = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (big_ptr[i]) EXPECT(aclrtFree(big_ptr[i]), ACL_SUCCESS);
    }

    MUST(aclrtMalloc(&d, 64, ACL_MEM_MALLOC_HUGE_FIRST));
    MUST(aclrtMallocHost(&h, 64));
    /* Copies: CANN checks count == 0 first, then NULLs and the kind (ACL layer), then ranges and
     * count > destMax (runtime layer, 107000). */
    EXPECT(aclrtMemcpy(NULL, 0, NULL, 0, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS);
    EXPECT(aclrtMemcpy(NULL, 0, NULL, 0, (aclrtMemcpyKind)77), ACL_SUCCESS);
    EXPECT(aclrtMemcpyAsync(NULL, 0, NULL, 0, ACL_MEMCPY_DEVICE_TO_HOST, NULL), ACL_SUCCESS);
    EXPECT(aclrtMemset(NULL, 0, 0, 0), ACL_SUCCESS);
    EXPECT(aclrtMemsetAsync(NULL, 0, 0, 0, NULL), ACL_SUCCESS);
    EXPECT(aclrtMemcpy(d, 64, host, 65, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpyAsync(d, 64, host, 65, ACL_MEMCPY_HOST_TO_DEVICE, NULL), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemset(d, 64, 0, 65), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemsetAsync(d, 64, 0, 65, NULL), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(NULL, 64, host, 8, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMemcpy(d, 64, NULL, 8, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMemcpy(d, 64, host, 8, (aclrtMemcpyKind)77), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMemset(NULL, 64, 0, 8), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMemcpy(host, 256, d, 65, ACL_MEMCPY_DEVICE_TO_HOST), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(host, 256, (char *)d + 60, 8, ACL_MEMCPY_DEVICE_TO_HOST), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(host, 256, (char *)d - 8, 16, ACL_MEMCPY_DEVICE_TO_HOST), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(host, 256, host + 128, 8, ACL_MEMCPY_DEVICE_TO_HOST), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(h, 64, host, 8, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy(d, 64, d, 8, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpy((void *)(uintptr_t)(UINTPTR_MAX - 4), 64, host, 8, ACL_MEMCPY_HOST_TO_DEVICE),
           ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemset(host, 256, 0, 8), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemcpyAsync(host, 256, h, 8, ACL_MEMCPY_HOST_TO_HOST, NULL), ACL_ERROR_RT_FEATURE_NOT_SUPPORT);
    EXPECT(aclrtMemcpyAsync(d, 64, host, 8, ACL_MEMCPY_HOST_TO_DEVICE, (aclrtStream)(uintptr_t)0xbad0),
           ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtMemcpy(d, 64, host, 64, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS);
    /* Frees. */
    EXPECT(aclrtFree(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtFree(host), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtFree((char *)d + 8), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtFree(h), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtFreeHost(d), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtFreeHost(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtFree(d), ACL_SUCCESS);
    EXPECT(aclrtFree(d), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtMemcpy(host, 256, d, 8, ACL_MEMCPY_DEVICE_TO_HOST), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtMemset(d, 64, 0, 8), ACL_ERROR_RT_PARAM_INVALID);
    EXPECT(aclrtFreeHost(h), ACL_SUCCESS);
    EXPECT(aclrtFreeHost(h), ACL_ERROR_RT_MEMORY_FREE);
    EXPECT(aclrtMallocHost(NULL, 8), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMallocHost(&p, 0), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtMallocHost(&p, SIZE_MAX), ACL_ERROR_RT_MEMORY_ALLOCATION);
}

static void group_streams_events(void) {
    MUST(aclInit(NULL));
    MUST(aclrtSetDevice(0));
    aclrtStream s = NULL;
    aclrtEvent e = NULL, e2 = NULL;
    aclrtStreamStatus ss;
    aclrtEventRecordedStatus es;
    float ms = 0;
    aclrtStream bogus = (aclrtStream)(uintptr_t)0xbad0;
    EXPECT(aclrtCreateStream(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtDestroyStream(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtDestroyStream(bogus), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtSynchronizeStream(bogus), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtStreamQuery(bogus, &ss), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtStreamQuery(NULL, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtCreateEvent(NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtCreateEventWithFlag(NULL, 0), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtCreateEventWithFlag(&e, 0xffff0000u), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtDestroyEvent((aclrtEvent)(uintptr_t)0xbad0), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtRecordEvent((aclrtEvent)(uintptr_t)0xbad0, NULL), ACL_ERROR_RT_INVALID_HANDLE);
    MUST(aclrtCreateStream(&s));
    MUST(aclrtCreateEvent(&e));
    MUST(aclrtCreateEvent(&e2));
    EXPECT(aclrtRecordEvent(e, bogus), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtStreamWaitEvent(s, (aclrtEvent)(uintptr_t)0xbad0), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtStreamWaitEvent(bogus, e), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtQueryEventStatus(e, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtEventElapsedTime(NULL, e, e2), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtEventElapsedTime(&ms, e, e2), ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID);
    MUST(aclrtRecordEvent(e2, s));
    MUST(aclrtSynchronizeStream(s));
    MUST(aclrtRecordEvent(e, s));
    MUST(aclrtSynchronizeEvent(e));
    EXPECT(aclrtEventElapsedTime(&ms, e, e2), ACL_ERROR_RT_EVENT_TIMESTAMP_REVERSAL);
    EXPECT(aclrtQueryEventStatus(e, &es), ACL_SUCCESS);
    MUST(aclrtDestroyEvent(e));
    EXPECT(aclrtDestroyEvent(e), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtSynchronizeEvent(e), ACL_ERROR_RT_INVALID_HANDLE);
    MUST(aclrtDestroyStream(s));
    EXPECT(aclrtDestroyStream(s), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtSynchronizeStream(s), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtMemsetAsync(NULL, 8, 0, 8, s), ACL_ERROR_INVALID_PARAM);
}

static void group_binaries(void) {
    MUST(aclInit(NULL));
    MUST(aclrtSetDevice(0));
    const int tmp_before = count_tmp_files("dsnpu-sim-kernel");
    size_t len = 0;
    void *image = read_file(g_kernels, &len);
    EXPECT_TRUE(image != NULL && len > 4096);
    if (!image) return;
    aclrtBinHandle bin = NULL;
    /* Truncated images, from memory and from files: a real error code, never SIGBUS. */
    size_t cuts[] = {1, 4, 16, 63, 64, 65, 200, 1000, 4096, len / 4, len / 2, len - 4096, len - 100, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        EXPECT(aclrtBinaryLoadFromData(image, cuts[i], NULL, &bin), ACL_ERROR_INVALID_FILE);
    }
    char path[512];
    size_t file_cuts[] = {64, len / 3, len - 1};
    for (size_t i = 0; i < sizeof file_cuts / sizeof file_cuts[0]; i++) {
        if (write_tmp(path, sizeof path, "cut", image, file_cuts[i]) == 0) {
            EXPECT(aclrtBinaryLoadFromFile(path, NULL, &bin), ACL_ERROR_INVALID_FILE);
            unlink(path);
        }
    }
    /* Corrupted headers. */
    char *bad = (char *)malloc(len);
    memcpy(bad, image, len);
    memset(bad + 32, 0xff, 8); /* e_phoff */
    EXPECT(aclrtBinaryLoadFromData(bad, len, NULL, &bin), ACL_ERROR_INVALID_FILE);
    memcpy(bad, image, len);
    memset(bad + 40, 0x7f, 8); /* e_shoff */
    EXPECT(aclrtBinaryLoadFromData(bad, len, NULL, &bin), ACL_ERROR_INVALID_FILE);
    memcpy(bad, image, len);
    bad[4] = 1; /* 32-bit class */
    EXPECT(aclrtBinaryLoadFromData(bad, len, NULL, &bin), ACL_ERROR_INVALID_FILE);
    memset(bad, 0x5a, len);
    EXPECT(aclrtBinaryLoadFromData(bad, len, NULL, &bin), ACL_ERROR_INVALID_FILE);
    free(bad);
    /* Arguments. */
    EXPECT(aclrtBinaryLoadFromData(NULL, len, NULL, &bin), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryLoadFromData(image, 0, NULL, &bin), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryLoadFromData(image, len, NULL, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryLoadFromFile(NULL, NULL, &bin), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryLoadFromFile("relative/kernels.so", NULL, &bin), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryLoadFromFile("/nonexistent/kernels.so", NULL, &bin), ACL_ERROR_RT_FILE_OPEN);
    EXPECT(aclrtBinaryLoadFromFile(tmp_dir(), NULL, &bin), ACL_ERROR_RT_FILE_OPEN);
    EXPECT(aclrtBinaryLoadFromFile("/dev/zero", NULL, &bin), ACL_ERROR_RT_FILE_OPEN);
    /* A valid binary: only its own functions resolve. */
    MUST(aclrtBinaryLoadFromData(image, len, NULL, &bin));
    aclrtFuncHandle f = NULL;
    EXPECT(aclrtBinaryGetFunction(bin, "abort", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    EXPECT(aclrtBinaryGetFunction(bin, "memcpy", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    EXPECT(aclrtBinaryGetFunction(bin, "snprintf", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    EXPECT(aclrtBinaryGetFunction(bin, "aclrtMalloc", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    EXPECT(aclrtBinaryGetFunction(bin, "no_such_kernel", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    EXPECT(aclrtBinaryGetFunction(bin, "arg_ptr", &f), ACL_ERROR_RT_KERNEL_LOOKUP); /* static */
    EXPECT(aclrtBinaryGetFunction(bin, "", &f), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryGetFunction(bin, "dsnpu_sim_kernel_abi_version", &f), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryGetFunction(bin, NULL, &f), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryGetFunction(bin, "vec_add", NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtBinaryGetFunction((aclrtBinHandle)(uintptr_t)0xbad0, "vec_add", &f), ACL_ERROR_RT_INVALID_HANDLE);
    MUST(aclrtBinaryGetFunction(bin, "vec_add", &f));
    /* Launch arguments. */
    aclrtArgsHandle args = NULL;
    aclrtParamHandle ph = NULL;
    uint64_t zero = 0;
    EXPECT(aclrtKernelArgsInit((aclrtFuncHandle)(uintptr_t)0xbad0, &args), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtKernelArgsInit(f, NULL), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtKernelArgsInit(f, &args));
    EXPECT(aclrtKernelArgsAppend(args, &zero, 0, &ph), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtKernelArgsAppend(args, NULL, 8, &ph), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtKernelArgsAppendPlaceHolder(args, NULL), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtKernelArgsAppend(args, &zero, 8, &ph));
    /* Not finalized yet. */
    EXPECT(aclrtLaunchKernelWithConfig(f, 1, NULL, NULL, args, NULL), ACL_ERROR_INVALID_PARAM);
    MUST(aclrtKernelArgsFinalize(args));
    EXPECT(aclrtKernelArgsAppend(args, &zero, 8, &ph), ACL_ERROR_INVALID_PARAM);
    int reserve = 0;
    EXPECT(aclrtLaunchKernelWithConfig(f, 1, NULL, NULL, args, &reserve), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtLaunchKernelWithConfig(f, 0, NULL, NULL, args, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtLaunchKernelWithConfig(f, 65536, NULL, NULL, args, NULL), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtLaunchKernelWithConfig(f, 1, (aclrtStream)(uintptr_t)0xbad0, NULL, args, NULL),
           ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtLaunchKernelWithConfig((aclrtFuncHandle)(uintptr_t)0xbad0, 1, NULL, NULL, args, NULL),
           ACL_ERROR_RT_INVALID_HANDLE);
    aclrtLaunchKernelCfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.numAttrs = 3;
    cfg.attrs = NULL;
    EXPECT(aclrtLaunchKernelWithConfig(f, 1, NULL, &cfg, args, NULL), ACL_ERROR_INVALID_PARAM);
    /* Host args. */
    uint64_t blob[4] = {0, 0, 0, 0};
    aclrtPlaceHolderInfo holder;
    holder.addrOffset = 30;
    holder.dataOffset = 0;
    EXPECT(aclrtLaunchKernelWithHostArgs(f, 1, NULL, NULL, NULL, 32, NULL, 0), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtLaunchKernelWithHostArgs(f, 1, NULL, NULL, blob, 32, NULL, 1), ACL_ERROR_INVALID_PARAM);
    EXPECT(aclrtLaunchKernelWithHostArgs(f, 1, NULL, NULL, blob, 32, &holder, 1), ACL_ERROR_INVALID_PARAM);
    /* A launch with NULL GM addresses faults on the device, reported at synchronize. */
    EXPECT(aclrtLaunchKernelWithHostArgs(f, 1, NULL, NULL, blob, 32, NULL, 0), ACL_SUCCESS);
    EXPECT(aclrtSynchronizeStream(NULL), ACL_ERROR_RT_AICORE_EXCEPTION);
    EXPECT(aclrtSynchronizeStream(NULL), ACL_SUCCESS);
    /* Unload: its handles die with it. */
    MUST(aclrtBinaryUnLoad(bin));
    EXPECT(aclrtBinaryUnLoad(bin), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtBinaryGetFunction(bin, "vec_add", &f), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtLaunchKernelWithConfig(f, 1, NULL, NULL, args, NULL), ACL_ERROR_RT_INVALID_HANDLE);
    EXPECT(aclrtBinaryUnLoad(NULL), ACL_ERROR_INVALID_PARAM);
    /* The file path works too, and nothing was left in the temporary directory. */
    MUST(aclrtBinaryLoadFromFile(g_kernels, NULL, &bin));
    EXPECT(aclrtBinaryGetFunction(bin, "abort", &f), ACL_ERROR_RT_KERNEL_LOOKUP);
    MUST(aclrtBinaryUnLoad(bin));
    EXPECT(count_tmp_files("dsnpu-sim-kernel"), tmp_before);
    free(image);
}

static void group_hccl(void) {
    MUST(aclInit(NULL));
    MUST(aclrtSetDevice(0));
    int32_t devs[2] = {0, 0};
    HcclComm comm = NULL;
    HcclComm comms[2] = {NULL, NULL};
    HcclRootInfo root;
    uint32_t n = 0;
    EXPECT(HcclGetRootInfo(NULL), HCCL_E_PTR);
    EXPECT(HcclCommInitAll(0, devs, comms), HCCL_E_PARA);
    EXPECT(HcclCommInitAll(1, NULL, comms), HCCL_E_PTR);
    EXPECT(HcclCommInitAll(1, devs, NULL), HCCL_E_PTR);
    EXPECT(HcclCommInitAll(100000, devs, comms), HCCL_E_PARA);
    MUST(HcclGetRootInfo(&root));
    EXPECT(HcclCommInitRootInfo(1, NULL, 0, &comm), HCCL_E_PTR);
    EXPECT(HcclCommInitRootInfo(2, &root, 2, &comm), HCCL_E_PARA);
    EXPECT(HcclCommInitRootInfo(0, &root, 0, &comm), HCCL_E_PARA);
    EXPECT(HcclCommInitRootInfo(1, &root, 0, NULL), HCCL_E_PTR);
    HcclRootInfo forged;
    memset(&forged, 0x41, sizeof forged);
    EXPECT(HcclCommInitRootInfo(1, &forged, 0, &comm), HCCL_E_PARA);
    MUST(HcclCommInitAll(1, devs, &comm));
    EXPECT(HcclGetRankSize(comm, NULL), HCCL_E_PTR);
    EXPECT(HcclGetRankSize(NULL, &n), HCCL_E_PTR);
    EXPECT(HcclGetRankId((HcclComm)(uintptr_t)0xbad0, &n), HCCL_E_PTR);
    aclrtStream s = NULL;
    MUST(aclrtCreateStream(&s));
    void *buf = NULL;
    MUST(aclrtMalloc(&buf, 4096, ACL_MEM_MALLOC_HUGE_FIRST));
    char host[64];
    /* NULL buffers: HCCL_E_PTR, whatever the count. */
    EXPECT(HcclAllReduce(NULL, buf, 16, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PTR);
    EXPECT(HcclAllReduce(buf, NULL, 16, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PTR);
    EXPECT(HcclAllReduce(NULL, NULL, 0, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PTR);
    EXPECT(HcclAllReduce(NULL, buf, 16, (HcclDataType)999, HCCL_REDUCE_SUM, comm, s), HCCL_E_PTR);
    EXPECT(HcclAllGather(NULL, buf, 16, HCCL_DATA_TYPE_FP32, comm, s), HCCL_E_PTR);
    EXPECT(HcclAllGather(buf, NULL, 16, HCCL_DATA_TYPE_FP32, comm, s), HCCL_E_PTR);
    uint64_t counts[1] = {4}, displs[1] = {0};
    EXPECT(HcclAlltoAllV(NULL, counts, displs, HCCL_DATA_TYPE_FP32, buf, counts, displs, HCCL_DATA_TYPE_FP32, comm, s),
           HCCL_E_PTR);
    EXPECT(HcclAlltoAllV(buf, NULL, displs, HCCL_DATA_TYPE_FP32, buf, counts, displs, HCCL_DATA_TYPE_FP32, comm, s),
           HCCL_E_PTR);
    EXPECT(HcclAlltoAllV(buf, counts, displs, HCCL_DATA_TYPE_FP32, NULL, counts, displs, HCCL_DATA_TYPE_FP32, comm, s),
           HCCL_E_PTR);
    /* Other bad arguments. */
    EXPECT(HcclAllReduce(buf, buf, 16, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, NULL, s), HCCL_E_PTR);
    EXPECT(HcclAllReduce(buf, buf, 16, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, NULL), HCCL_E_PTR);
    EXPECT(HcclAllReduce(buf, buf, 16, (HcclDataType)999, HCCL_REDUCE_SUM, comm, s), HCCL_E_PARA);
    EXPECT(HcclAllReduce(buf, buf, 16, HCCL_DATA_TYPE_FP32, (HcclReduceOp)999, comm, s), HCCL_E_PARA);
    EXPECT(HcclAllReduce(buf, buf, 2048, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PARA);
    EXPECT(HcclAllReduce(buf, buf, UINT64_MAX / 2, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PARA);
    EXPECT(HcclAllReduce(host, buf, 4, HCCL_DATA_TYPE_FP32, HCCL_REDUCE_SUM, comm, s), HCCL_E_PARA);
    EXPECT(HcclAllGather(buf, buf, 4097, HCCL_DATA_TYPE_INT8, comm, s), HCCL_E_PARA);
    EXPECT(HcclAlltoAllV(buf, counts, displs, HCCL_DATA_TYPE_FP32, buf, counts, displs, HCCL_DATA_TYPE_FP16, comm, s),
           HCCL_E_PARA);
    counts[0] = UINT64_MAX / 2;
    EXPECT(HcclAlltoAllV(buf, counts, displs, HCCL_DATA_TYPE_FP32, buf, counts, displs, HCCL_DATA_TYPE_FP32, comm, s),
           HCCL_E_PARA);
    EXPECT(aclrtSynchronizeStream(s), ACL_SUCCESS);
    EXPECT(HcclCommDestroy((HcclComm)(uintptr_t)0xbad0), HCCL_E_PTR);
    MUST(HcclCommDestroy(comm));
    EXPECT(HcclCommDestroy(comm), HCCL_E_PTR);
    EXPECT(HcclGetRankSize(comm, &n), HCCL_E_PTR);
    EXPECT_TRUE(HcclGetErrorString((HcclResult)9999) != NULL);
    EXPECT_TRUE(HcclGetErrorString(HCCL_E_PTR) != NULL);
    MUST(aclrtFree(buf));
    MUST(aclrtDestroyStream(s));
}

/* ------------------------------------------------------------------------------------------- */

struct Group {
    const char *name;
    void (*run)(void);
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <test kernel binary>\n", argv[0]);
        return 2;
    }
    g_kernels = argv[1];
    struct Group groups[] = {
        {"init", group_init},
        {"device", group_device},
        {"memory", group_memory},
        {"streams_events", group_streams_events},
        {"binaries", group_binaries},
        {"hccl", group_hccl},
    };
    g_counts = (struct Counts *)mmap(NULL, sizeof(struct Counts), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_counts == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    struct Counts total = {0, 0, 0};
    int crashes = 0, hangs = 0;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        memset(g_counts, 0, sizeof *g_counts);
        printf("group %s\n", groups[i].name);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            alarm(GROUP_ALARM_SECONDS);
            groups[i].run();
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        const char *outcome = "exited";
        if (WIFSIGNALED(status)) {
            if (WTERMSIG(status) == SIGALRM) {
                hangs++;
                outcome = "HUNG";
            } else {
                crashes++;
                outcome = "CRASHED";
            }
        } else if (WEXITSTATUS(status) != 0) {
            crashes++;
            outcome = "EXITED WITH AN ERROR";
        }
        printf("group %s: %d checks, %d failures, %d silent successes, %s",
               groups[i].name, g_counts->checks, g_counts->failures, g_counts->silent, outcome);
        if (WIFSIGNALED(status)) printf(" (signal %d)", WTERMSIG(status));
        printf("\n");
        fflush(stdout);
        total.checks += g_counts->checks;
        total.failures += g_counts->failures;
        total.silent += g_counts->silent;
    }
    printf("TOTAL groups=%zu checks=%d failures=%d silent=%d crashes=%d hangs=%d\n",
           sizeof groups / sizeof groups[0], total.checks, total.failures, total.silent, crashes, hangs);
    return (total.failures || crashes || hangs) ? 1 : 0;
}
