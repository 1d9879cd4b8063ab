/* A crash in the middle of a save leaves the previous file intact: a child process saves two
 * different models over one path, alternately and without pause, and is killed (SIGKILL) at
 * random moments; after every kill the file at the path must be, byte for byte, one of the two
 * complete saves. The parent uses the library only after the last child is gone (no OpenMP pool
 * or context is inherited across fork). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softmoe.h"
#include "test_util.h"

#define ROUNDS 24

/* Big enough that a save (write + fsync) takes milliseconds, so kills land inside saves. */
static smoe_vit_config config(void)
{
    smoe_vit_config c;
    memset(&c, 0, sizeof c);
    c.image_size = 28, c.patch_size = 4, c.channels = 1, c.dim = 128, c.depth = 2, c.heads = 4, c.mlp_dim = 256;
    c.moe_layers[0] = 1, c.moe_count = 1, c.experts = 16, c.slots_per_expert = 1, c.num_classes = 10;
    return c;
}

static smoe_model *make_model(smoe_context *ctx, uint64_t seed)
{
    smoe_vit_config c = config();
    smoe_model *m = NULL;
    return smoe_vit_create(ctx, &c, seed, &m) ? NULL : m;
}

static char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (!fseek(f, 0, SEEK_END)) {
        long n = ftell(f);
        if (n >= 0 && !fseek(f, 0, SEEK_SET) && (buf = malloc((size_t)n + 1)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *size = (size_t)(n < 0 ? 0 : n);
    }
    fclose(f);
    return buf;
}

/* The child: saves model 1 and model 2 over path, then says so on fd, then saves forever. */
static void saver(const char *path, int fd)
{
    smoe_context *ctx = NULL;
    if (smoe_context_create(&ctx) || smoe_context_open_device(ctx, "cpu")) _exit(3);
    smoe_model *m[2] = {make_model(ctx, 1), make_model(ctx, 2)};
    if (!m[0] || !m[1]) _exit(4);
    for (long i = 0;; i++) {
        if (smoe_model_save(m[i & 1], path, 0)) _exit(5);
        if (i == 1 && write(fd, "r", 1) != 1) _exit(6);
    }
}

int main(void)
{
    char dir[] = "/tmp/smoe-save-kill-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[64], tmp[80];
    snprintf(path, sizeof path, "%s/ck.st", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    size_t sizes[ROUNDS] = {0};
    char *snap[ROUNDS] = {0};
    int mid_save = 0; /* kills that left a temp file: they landed inside a save */
    uint64_t rng = 42;

    for (int r = 0; r < ROUNDS; r++) {
        int pfd[2];
        if (pipe(pfd)) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            saver(path, pfd[1]);
        }
        close(pfd[1]);
        char c;
        ssize_t got = read(pfd[0], &c, 1);
        close(pfd[0]);
        CHECK_MSG(got == 1, "round %d: the saver did not start", r);
        struct timespec ts = {0, (long)(1e6 * (2 + 20 * (test_uniform(&rng) + 1)))}; /* 2-42 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK_MSG(WIFSIGNALED(status), "round %d: the saver exited on its own (status %d)", r, status);
        struct stat st;
        if (!stat(tmp, &st)) mid_save++;
        snap[r] = read_all(path, &sizes[r]);
        CHECK_MSG(snap[r] != NULL, "round %d: %s is missing after the kill", r, path);
        unlink(tmp);
    }

    /* The two complete files, made the same way in this process. */
    smoe_context *ctx = NULL;
    CHECK(smoe_context_create(&ctx) == SMOE_OK && smoe_context_open_device(ctx, "cpu") == SMOE_OK);
    char ref_path[2][80];
    char *ref[2] = {0};
    size_t ref_size[2] = {0};
    for (int k = 0; k < 2; k++) {
        snprintf(ref_path[k], sizeof ref_path[k], "%s/ref%d.st", dir, k);
        smoe_model *m = make_model(ctx, (uint64_t)k + 1);
        CHECK(m && smoe_model_save(m, ref_path[k], 0) == SMOE_OK);
        ref[k] = read_all(ref_path[k], &ref_size[k]);
        CHECK(ref[k] != NULL);
        unlink(ref_path[k]);
    }
    CHECK(ref[0] && ref[1] && (ref_size[0] != ref_size[1] || memcmp(ref[0], ref[1], ref_size[0])));
    for (int r = 0; r < ROUNDS; r++) {
        int same = 0;
        for (int k = 0; k < 2; k++)
            if (snap[r] && ref[k] && sizes[r] == ref_size[k] && !memcmp(snap[r], ref[k], sizes[r])) same = 1;
        CHECK_MSG(same, "round %d: the file after the kill (%zu bytes) is neither complete save", r, sizes[r]);
        /* and it loads */
        smoe_model *m = NULL;
        if (snap[r]) CHECK(smoe_model_load_memory(ctx, snap[r], sizes[r], &m) == SMOE_OK);
        smoe_model_free(m);
        free(snap[r]);
    }
    /* Without kills inside saves the test would prove nothing. */
    CHECK_MSG(mid_save > 0, "no kill landed inside a save (%d rounds)", ROUNDS);
    printf("%d of %d kills landed inside a save; the file was a complete save every time\n", mid_save, ROUNDS);
    free(ref[0]);
    free(ref[1]);
    smoe_context_destroy(ctx);
    unlink(path);
    rmdir(dir);
    return test_finish("test_save_kill");
}
