/* Autotuning and the cache directory: the first matmul of a shape class measures the variants
 * and keeps the fastest, in memory and in the tune file of the device and driver; a later
 * context reads the file and measures nothing; the pipeline cache is saved and read back;
 * damaged files, an unwritable directory and SOFTMOE_CACHE_DIR=off change nothing but speed;
 * SOFTMOE_AUTOTUNE=0 uses the table; an unknown forced variant is a clear error. Every result
 * is checked against the CPU. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/matmul.h"
#include "test_vk.h"

#define ROWS 40
#define COLS 48
#define INNER 36

static char dir[300];
static float ha[ROWS * INNER], hb[INNER * COLS], want[ROWS * COLS];

/* The file in dir whose name starts with prefix (into path), or 0. */
static int find_file(const char *prefix, char *path, size_t size)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            snprintf(path, size, "%s/%s", dir, e->d_name);
            found = 1;
        }
    closedir(d);
    return found;
}

static size_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (size_t)st.st_size;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) fputs(text, f), fclose(f);
}

/* Records and runs C = A B (ROWS x COLS x INNER) on a fresh context twice; returns the tunings measured
 * and the status of the first recording; checks the result. */
static uint32_t run(smoe_status *status, char *chosen, size_t chosen_size)
{
    smoe_context *ctx = test_open("vulkan");
    if (!ctx) return 0;
    smoe_gpu *gpu = &ctx->gpu;
    smoe_err err;
    smoe_arena arena;
    smoe_arena_init(&arena, gpu, "test tune");
    smoe_tensor a, b, c;
    CHECK(smoe_arena_reserve(&arena, sizeof ha, &a, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, sizeof hb, &b, &err) == SMOE_OK);
    CHECK(smoe_arena_reserve(&arena, sizeof want, &c, &err) == SMOE_OK);
    CHECK(smoe_arena_commit(&arena, &err) == SMOE_OK);
    CHECK(smoe_tensor_upload(&a, 0, ha, sizeof ha, &err) == SMOE_OK);
    CHECK(smoe_tensor_upload(&b, 0, hb, sizeof hb, &err) == SMOE_OK);
    smoe_matmul mm = {.M = ROWS, .N = COLS, .K = INNER, .batch = 1, .a = smoe_mm_plain(a, INNER, 0),
                      .b = smoe_mm_plain(b, COLS, 0), .c = smoe_mm_plain(c, COLS, 0)};
    *status = SMOE_OK;
    for (int rep = 0; rep < 2; rep++) { /* the second recording finds the choice in memory */
        smoe_program p;
        smoe_status st = smoe_program_begin(gpu, &p, &err);
        if (!st) st = smoe_record_matmul(&p, &mm, &err);
        if (!st) st = smoe_program_end(&p, &err);
        if (!st) st = smoe_program_run(&p, &err);
        smoe_program_destroy(&p);
        if (rep == 0) *status = st;
        if (st) {
            snprintf(chosen, chosen_size, "%s", err.msg);
            break;
        }
        float got[ROWS * COLS];
        CHECK(smoe_tensor_download(&c, 0, got, sizeof got, &err) == SMOE_OK);
        double e = test_rel_err(got, want, ROWS * COLS);
        CHECK_MSG(e < 1e-5, "relative error %.3g", e);
    }
    if (!*status) {
        /* what the table (not the tune) would choose is a usable variant too */
        const char *table = smoe_matmul_choice(gpu, &mm, NULL);
        CHECK(table != NULL);
    }
    uint32_t tunings = gpu->tunings;
    smoe_arena_release(&arena);
    test_close(ctx);
    return tunings;
}

static int is_variant(const char *name)
{
    for (uint32_t i = 0; i < smoe_matmul_variant_count(); i++)
        if (!strcmp(smoe_matmul_variant_name(i), name)) return 1;
    return 0;
}

int main(void)
{
    uint64_t seed = 3;
    for (int i = 0; i < ROWS * INNER; i++) ha[i] = test_rand(&seed);
    for (int i = 0; i < INNER * COLS; i++) hb[i] = test_rand(&seed);
    for (int r = 0; r < ROWS; r++)
        for (int col = 0; col < COLS; col++) {
            double s = 0;
            for (int k = 0; k < INNER; k++) s += (double)ha[r * INNER + k] * hb[k * COLS + col];
            want[r * COLS + col] = (float)s;
        }
    snprintf(dir, sizeof dir, "/tmp/softmoe-test-tune-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char sub[280];
    snprintf(sub, sizeof sub, "%.200s/cache", dir); /* created by the library */
    setenv("SOFTMOE_CACHE_DIR", sub, 1);
    setenv("SOFTMOE_AUTOTUNE", "1", 1);
    unsetenv("SOFTMOE_MATMUL_VARIANT");
    snprintf(dir, sizeof dir, "%s", sub);
    smoe_status st;
    char msg[1100] = "";

    /* first use: one measurement, kept in a file that names a variant */
    CHECK(run(&st, msg, sizeof msg) == 1 && st == SMOE_OK);
    char tune_path[600], pipe_path[600];
    CHECK_MSG(find_file("tune-", tune_path, sizeof tune_path), "no tune file in %s", dir);
    CHECK_MSG(find_file("pipelines-", pipe_path, sizeof pipe_path) && file_size(pipe_path) > 0,
              "no pipeline cache file in %s", dir);
    FILE *f = fopen(tune_path, "r");
    char key[128] = "", value[64] = "";
    CHECK(f && fscanf(f, "%127s %63s", key, value) == 2);
    if (f) fclose(f);
    CHECK_MSG(!strncmp(key, "matmul/", 7) && is_variant(value), "tune file line \"%s %s\"", key, value);

    /* a later context: read from the file, nothing measured */
    CHECK(run(&st, msg, sizeof msg) == 0 && st == SMOE_OK);

    /* damaged files: ignored, measured again, rewritten */
    write_file(tune_path, "garbage\nmatmul/x\n \n");
    write_file(pipe_path, "not a pipeline cache");
    CHECK(run(&st, msg, sizeof msg) == 1 && st == SMOE_OK);
    CHECK(run(&st, msg, sizeof msg) == 0 && st == SMOE_OK);

    /* a directory that cannot be made (under a regular file): everything works, nothing kept */
    char blocked[700];
    snprintf(blocked, sizeof blocked, "%s/cache", tune_path);
    setenv("SOFTMOE_CACHE_DIR", blocked, 1);
    CHECK(run(&st, msg, sizeof msg) == 1 && st == SMOE_OK);
    CHECK(run(&st, msg, sizeof msg) == 1 && st == SMOE_OK);

    /* caching off, autotune off: the table, no measurement */
    setenv("SOFTMOE_CACHE_DIR", "off", 1);
    CHECK(run(&st, msg, sizeof msg) == 1 && st == SMOE_OK);
    setenv("SOFTMOE_AUTOTUNE", "0", 1);
    CHECK(run(&st, msg, sizeof msg) == 0 && st == SMOE_OK);

    /* a forced variant that does not exist */
    setenv("SOFTMOE_MATMUL_VARIANT", "no-such-variant", 1);
    run(&st, msg, sizeof msg);
    CHECK_MSG(st == SMOE_ERROR_INVALID_ARGUMENT && strstr(msg, "no-such-variant") && strstr(msg, "shared64x64"),
              "unknown variant: status %d, \"%s\"", st, msg);
    unsetenv("SOFTMOE_MATMUL_VARIANT");

    unlink(tune_path);
    unlink(pipe_path);
    rmdir(dir);
    *strrchr(dir, '/') = 0;
    rmdir(dir);
    return test_finish("test_tune");
}
