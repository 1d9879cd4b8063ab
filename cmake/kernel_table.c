/* The kernel table, generated at build time from the compiled shaders (a host tool run by
 * CMakeLists.txt after glslangValidator). For every shaders/NAME.comp it reads NAME.spv and writes
 *   - to the header: the enum entry SMOE_K_NAME (enum smoe_kernel, then SMOE_KERNEL_COUNT);
 *   - to the source: the SPIR-V as a const array, and the descriptor smoe_kernels[SMOE_K_NAME]:
 *     the binding count (highest binding + 1, all in set 0), which bindings are uniform texel
 *     buffers (textureBuffer / samplerBuffer; every other binding a storage buffer), the
 *     push-constant struct (sizeof of the C type named by the block: SMOE_PUSH(SMOE_PUSH_X) in
 *     common/interface.h declares block SMOE_PUSH_X, whose C twin is smoe_push_x; a static
 *     assertion checks its size against the SPIR-V's) and the number of specialization constants
 *     (highest SpecId + 1).
 * Reflecting the SPIR-V rather than parsing GLSL sees what the compiler saw: includes, macros
 * and constant ids written as macros are already resolved. A shader with a declaration the table
 * cannot describe (another descriptor set, a uniform or storage-image binding, a push block not
 * made by SMOE_PUSH, no local_size_x_id = 0..2) fails the build with a message naming it.
 *
 * Adding a kernel: write shaders/NAME.comp (bindings 0..n-1, SMOE_PUSH for its push constants,
 * local_size_x_id = 0, ...); its table entry and SMOE_K_NAME appear by themselves. Then its op
 * function records it with smoe_record (host/record.h), its CPU kernel goes to host/cpu/, its test
 * to tests/.
 *
 * Usage: kernel_table OUT.c OUT.h HEADER... -- A.spv B.spv ...  (HEADERs: included by OUT.c for
 * the push-constant types, as named under shaders/). */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OP_NAME = 5,
    OP_TYPE_INT = 21,
    OP_TYPE_FLOAT = 22,
    OP_TYPE_VECTOR = 23,
    OP_TYPE_IMAGE = 25,
    OP_TYPE_SAMPLED_IMAGE = 27,
    OP_TYPE_STRUCT = 30,
    OP_TYPE_POINTER = 32,
    OP_VARIABLE = 59,
    OP_DECORATE = 71,
    OP_MEMBER_DECORATE = 72,
    DEC_SPEC_ID = 1,
    DEC_BLOCK = 2,
    DEC_BUFFER_BLOCK = 3,
    DEC_BINDING = 33,
    DEC_SET = 34,
    DEC_OFFSET = 35,
    SC_UNIFORM_CONSTANT = 0,
    SC_UNIFORM = 2,
    SC_PUSH_CONSTANT = 9,
    SC_STORAGE_BUFFER = 12,
    DIM_BUFFER = 5,
    MAX_BINDINGS = 32,
    MAX_MEMBERS = 64,
};

/* What one id of the module is, as far as the table needs to know. */
typedef struct id_info {
    uint32_t op;          /* the instruction defining it (a type or a variable), 0 if none */
    uint32_t a, b, c;     /* operands: see reflect() */
    int binding, set, spec_id, block, buffer_block;
    const char *name;     /* OpName, pointing into the module */
    uint32_t members;     /* OpTypeStruct: member count; member_type and member_offset below */
    uint32_t member_type[MAX_MEMBERS];
    int member_offset[MAX_MEMBERS];
} id_info;

typedef struct kernel {
    char name[64];
    uint32_t bindings, texel_mask, spec_count, push_size;
    uint32_t seen; /* bindings declared */
    char push_type[64]; /* C type, "" without push constants */
} kernel;

static const char *g_shader; /* for messages */

static void fail(const char *what)
{
    fprintf(stderr, "kernel_table: shaders/%s.comp: %s\n", g_shader, what);
    exit(1);
}

static uint32_t *read_words(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail("cannot open its SPIR-V");
    uint32_t *w = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            uint32_t *grown = realloc(w, cap * 4);
            if (!grown) fail("out of memory");
            w = grown;
        }
        got = fread(w + n, 4, cap - n, f);
        n += got;
    } while (got);
    fclose(f);
    if (n < 5 || w[0] != 0x07230203u) fail("its .spv is not little-endian SPIR-V");
    *count = n;
    return w;
}

/* Size in bytes of a push-constant member type: 32-bit scalars and vectors of them. */
static int member_size(const id_info *ids, uint32_t bound, uint32_t type)
{
    if (type >= bound) return -1;
    const id_info *t = &ids[type];
    if ((t->op == OP_TYPE_INT || t->op == OP_TYPE_FLOAT) && t->a == 32) return 4;
    if (t->op == OP_TYPE_VECTOR) {
        int s = member_size(ids, bound, t->a);
        return s < 0 ? -1 : s * (int)t->b;
    }
    return -1;
}

static void record_decoration(id_info *d, uint32_t dec, uint32_t value)
{
    if (dec == DEC_BINDING) d->binding = (int)value;
    if (dec == DEC_SET) d->set = (int)value;
    if (dec == DEC_SPEC_ID) d->spec_id = (int)value;
    if (dec == DEC_BLOCK) d->block = 1;
    if (dec == DEC_BUFFER_BLOCK) d->buffer_block = 1;
}

/* The id an instruction the table reads is about (its result, or its target), or -1 for others. */
static int64_t subject(uint32_t op, const uint32_t *o, uint32_t len)
{
    switch (op) {
    case OP_VARIABLE: return len > 2 ? o[1] : -1;
    case OP_NAME: case OP_DECORATE: case OP_MEMBER_DECORATE: case OP_TYPE_INT: case OP_TYPE_FLOAT: case OP_TYPE_VECTOR:
    case OP_TYPE_IMAGE: case OP_TYPE_SAMPLED_IMAGE: case OP_TYPE_STRUCT: case OP_TYPE_POINTER:
        return len > 1 ? o[0] : -1;
    default: return -1;
    }
}

/* The fewest words (the opcode's included) of an instruction that subject() returns an id for. */
static uint32_t min_words(uint32_t op)
{
    switch (op) {
    case OP_TYPE_IMAGE: return 9;
    case OP_VARIABLE: case OP_TYPE_POINTER: case OP_TYPE_VECTOR: case OP_TYPE_INT: case OP_MEMBER_DECORATE: return 4;
    case OP_TYPE_STRUCT: return 2;
    default: return 3;
    }
}

/* Notes what instruction op (operands o, len words with the opcode) says about id d. */
static void note(id_info *d, uint32_t op, const uint32_t *o, uint32_t len)
{
    if (len < min_words(op)) fail("malformed SPIR-V (a short instruction)");
    switch (op) {
    case OP_NAME:
        if (((const char *)(o + len - 1))[-1]) fail("malformed SPIR-V (a name without its terminating zero)");
        d->name = (const char *)(o + 1);
        break;
    case OP_DECORATE: record_decoration(d, o[1], len > 3 ? o[2] : 0); break;
    case OP_MEMBER_DECORATE:
        if (len >= 5 && o[2] == DEC_OFFSET && o[1] < MAX_MEMBERS) d->member_offset[o[1]] = (int)o[3];
        break;
    case OP_TYPE_STRUCT:
        if (len - 2 > MAX_MEMBERS) fail("a struct with too many members");
        d->op = op;
        d->members = len - 2;
        for (uint32_t m = 0; m < d->members; m++) d->member_type[m] = o[1 + m];
        break;
    case OP_VARIABLE: d->op = op, d->a = o[0], d->b = o[2]; break;       /* type, storage class */
    case OP_TYPE_POINTER: d->op = op, d->a = o[1], d->b = o[2]; break;   /* storage class, type */
    case OP_TYPE_IMAGE: d->op = op, d->a = o[2], d->b = o[6]; break;     /* dim, sampled */
    case OP_TYPE_VECTOR: d->op = op, d->a = o[1], d->b = o[2]; break;    /* component, count */
    default: d->op = op, d->a = o[1]; break; /* int/float: width; sampled image: image type */
    }
}

/* Fills ids[] from the instructions of the module. */
static void scan(const uint32_t *w, size_t n, id_info *ids, uint32_t bound)
{
    for (size_t i = 5; i < n;) {
        uint32_t len = w[i] >> 16, op = w[i] & 0xffff;
        if (!len || i + len > n) fail("malformed SPIR-V");
        int64_t id = subject(op, w + i + 1, len);
        if (id >= (int64_t)bound) fail("malformed SPIR-V (an id out of bounds)");
        if (id >= 0) note(&ids[id], op, w + i + 1, len);
        i += len;
    }
}

/* The push-constant block: its C type and size. */
static void push_block(kernel *k, const id_info *ids, uint32_t bound, uint32_t type)
{
    const id_info *s = &ids[type];
    if (s->op != OP_TYPE_STRUCT || !s->name || strncmp(s->name, "SMOE_PUSH_", 10) || strlen(s->name) >= sizeof k->push_type)
        fail("push constants not declared by SMOE_PUSH(SMOE_PUSH_...) (common/interface.h)");
    if (k->push_type[0]) fail("two push-constant blocks");
    for (size_t c = 0; s->name[c]; c++) k->push_type[c] = (char)tolower((unsigned char)s->name[c]);
    int size = 0;
    for (uint32_t m = 0; m < s->members; m++) {
        int ms = member_size(ids, bound, s->member_type[m]);
        if (ms < 0) fail("a push constant that is not a 32-bit scalar or vector");
        if (s->member_offset[m] + ms > size) size = s->member_offset[m] + ms;
    }
    k->push_size = (uint32_t)size;
}

/* A descriptor binding: a storage buffer, or a uniform texel buffer (texel_mask). */
static void binding(kernel *k, const id_info *ids, uint32_t bound, const id_info *var, uint32_t sc, uint32_t type)
{
    if (var->set != 0 || var->binding < 0 || var->binding >= MAX_BINDINGS)
        fail("a binding outside set 0, or without a binding number");
    const id_info *t = &ids[type];
    int texel = 0;
    if (sc == SC_UNIFORM_CONSTANT) {
        if (t->op == OP_TYPE_SAMPLED_IMAGE && t->a < bound) t = &ids[t->a];
        if (t->op != OP_TYPE_IMAGE || t->a != DIM_BUFFER || t->b != 1)
            fail("a binding that is neither a storage buffer nor a textureBuffer / samplerBuffer");
        texel = 1;
    } else if (!(t->op == OP_TYPE_STRUCT && (sc == SC_STORAGE_BUFFER || (sc == SC_UNIFORM && t->buffer_block)))) {
        fail("a binding that is neither a storage buffer nor a textureBuffer / samplerBuffer (a uniform block?)");
    }
    uint32_t bit = 1u << var->binding;
    if ((k->texel_mask | k->seen) & bit) fail("two variables at one binding");
    k->seen |= bit;
    if (texel) k->texel_mask |= bit;
    if ((uint32_t)var->binding + 1 > k->bindings) k->bindings = (uint32_t)var->binding + 1;
}

static void reflect(kernel *k, const uint32_t *w, size_t n)
{
    uint32_t bound = w[3];
    if (bound > (1u << 22)) fail("malformed SPIR-V (id bound)");
    id_info *ids = calloc(bound ? bound : 1, sizeof *ids);
    if (!ids) fail("out of memory");
    for (uint32_t i = 0; i < bound; i++) ids[i].binding = ids[i].set = ids[i].spec_id = -1;
    scan(w, n, ids, bound);
    int max_spec = -1;
    uint32_t spec_seen = 0;
    for (uint32_t i = 0; i < bound; i++) {
        const id_info *d = &ids[i];
        if (d->spec_id > max_spec) max_spec = d->spec_id;
        if (d->spec_id >= 0 && d->spec_id < 3) spec_seen |= 1u << d->spec_id;
        if (d->op != OP_VARIABLE) continue;
        const id_info *ptr = d->a < bound ? &ids[d->a] : NULL;
        if (!ptr || ptr->op != OP_TYPE_POINTER || ptr->b >= bound) fail("a variable of no pointer type");
        uint32_t sc = d->b;
        if (sc == SC_PUSH_CONSTANT) push_block(k, ids, bound, ptr->b);
        else if (sc == SC_UNIFORM_CONSTANT || sc == SC_UNIFORM || sc == SC_STORAGE_BUFFER)
            binding(k, ids, bound, d, sc, ptr->b);
    }
    if (spec_seen != 7) fail("no workgroup size from specialization constants 0, 1, 2 (local_size_x_id = 0, ...)");
    k->spec_count = (uint32_t)max_spec + 1;
    free(ids);
}

/* Growing text. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

#if defined(__GNUC__)
static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif

static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int need = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (need < 0) fail("formatting failed");
        if (t->s && t->len + (size_t)need < t->cap) {
            t->len += (size_t)need;
            return;
        }
        size_t cap = t->cap ? 2 * t->cap : 1 << 16;
        while (cap <= t->len + (size_t)need) cap *= 2;
        char *grown = realloc(t->s, cap);
        if (!grown) fail("out of memory");
        t->s = grown;
        t->cap = cap;
    }
}

/* Writes path unless it already holds exactly this (so that what includes it is not rebuilt). */
static void write_if_changed(const char *path, const text *t)
{
    FILE *f = fopen(path, "rb");
    if (f) {
        char *old = malloc(t->len + 1);
        size_t got = old ? fread(old, 1, t->len + 1, f) : 0;
        fclose(f);
        int same = old && got == t->len && !memcmp(old, t->s, t->len);
        free(old);
        if (same) return;
    }
    f = fopen(path, "wb");
    if (!f || fwrite(t->s, 1, t->len, f) != t->len || fclose(f)) {
        fprintf(stderr, "kernel_table: cannot write %s\n", path);
        exit(1);
    }
}

/* NAME from .../NAME.spv, which must be a C identifier in lower case. */
static void kernel_name(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (len < 5 || strcmp(base + len - 4, ".spv") || len - 4 >= size) {
        fprintf(stderr, "kernel_table: %s is not NAME.spv\n", path);
        exit(1);
    }
    memcpy(out, base, len - 4);
    out[len - 4] = 0;
    g_shader = out;
    for (size_t i = 0; out[i]; i++)
        if (!(islower((unsigned char)out[i]) || out[i] == '_' || (i && isdigit((unsigned char)out[i]))))
            fail("its name is not a C identifier in lower case");
}

static void upper(const char *s, char *out)
{
    size_t i = 0;
    for (; s[i]; i++) out[i] = (char)toupper((unsigned char)s[i]);
    out[i] = 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: kernel_table OUT.c OUT.h HEADER... -- A.spv ...\n");
        return 2;
    }
    int first = 3;
    while (first < argc && strcmp(argv[first], "--")) first++;
    text c = {0}, h = {0}, table = {0}, checks = {0};
    put(&c, "/* Generated by cmake/kernel_table.c from the shaders: do not edit. */\n#include \"pipeline.h\"\n");
    for (int i = 3; i < first; i++) put(&c, "#include \"%s\"\n", argv[i]);
    put(&h, "/* Generated by cmake/kernel_table.c from the shaders: do not edit. The kernels, one per\n"
            " * shader; their descriptors are smoe_kernels[] (pipeline.h). */\n"
            "#ifndef SMOE_KERNELS_H\n#define SMOE_KERNELS_H\n\ntypedef enum smoe_kernel {\n");
    for (int i = first + 1; i < argc; i++) {
        kernel k = {0};
        kernel_name(argv[i], k.name, sizeof k.name);
        size_t n;
        uint32_t *w = read_words(argv[i], &n);
        reflect(&k, w, n);
        char up[64];
        upper(k.name, up);
        put(&c, "\nstatic const uint32_t spv_%s[%zu] = {", k.name, n);
        for (size_t j = 0; j < n; j++) put(&c, "%s0x%08xu,", j % 8 ? " " : "\n    ", w[j]);
        put(&c, "\n};\n");
        free(w);
        char push[96];
        snprintf(push, sizeof push, k.push_type[0] ? "sizeof(%s)" : "0", k.push_type);
        put(&h, "    SMOE_K_%s, /* %u bindings (texel 0x%x), push %s, %u constants */\n", up, k.bindings, k.texel_mask,
            k.push_type[0] ? k.push_type : "none", k.spec_count);
        put(&table, "    [SMOE_K_%s] = {\"%s\", spv_%s, sizeof spv_%s, %u, 0x%xu, %s, %u},\n", up, k.name, k.name, k.name,
            k.bindings, k.texel_mask, push, k.spec_count);
        if (k.push_type[0])
            put(&checks, "_Static_assert(sizeof(%s) == %u, \"shaders/%s.comp: %s differs from the shader's %u push bytes\");\n",
                k.push_type, k.push_size, k.name, k.push_type, k.push_size);
        put(&checks, "_Static_assert(%u <= SMOE_MAX_BINDINGS && %s <= SMOE_MAX_PUSH && %u <= SMOE_MAX_SPEC, "
                     "\"shaders/%s.comp: more bindings, push bytes or constants than pipeline.h allows\");\n",
            k.bindings, push, k.spec_count, k.name);
    }
    put(&h, "    SMOE_KERNEL_COUNT\n} smoe_kernel;\n\n#endif\n");
    put(&c, "\nconst smoe_kernel_desc smoe_kernels[SMOE_KERNEL_COUNT] = {\n%s};\n\n%s", table.s ? table.s : "",
        checks.s ? checks.s : "");
    write_if_changed(argv[1], &c);
    write_if_changed(argv[2], &h);
    free(c.s), free(h.s), free(table.s), free(checks.s);
    return 0;
}
