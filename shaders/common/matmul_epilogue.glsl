// What every matmul variant shares: the two-level operand addressing and the epilogue, with the
// buffers it uses (bindings 2-4, 6-8 and 10; 0, 1 and 5 are the operands and statistics, whose
// kind differs between variants, 9 the row indices of GATHER). Include after the push constants and the EPI constant. The
// per-column and per-element buffers are vec4 arrays, read and written a float at a time
// (store_c) or, where the host saw them all aligned to 4 floats, four at a time (store_c4).
layout(std430, binding = 2) buffer BufC { vec4 c4[]; };
layout(std430, binding = 3) readonly buffer BufBias { vec4 bias4[]; };
layout(std430, binding = 4) readonly buffer BufAux { vec4 aux4[]; };
layout(std430, binding = 6) readonly buffer BufRowScale { float rowscale[]; };
layout(std430, binding = 7) readonly buffer BufColScale { vec4 colscale4[]; };
layout(std430, binding = 8) readonly buffer BufScalar { float scalar[]; };
layout(std430, binding = 10) writeonly buffer BufGelu { vec4 gelu4[]; };

// Element (r, col) of batch z of a stored operand (interface.h, SMOE_PUSH_MATMUL).
uint at(uint r, uint col, uint off, uint bs, uint ld, uint g, uint gs, uint z)
{
    return off + z * bs + (r / g) * gs + (r % g) * ld + col;
}

// Where row r of C (and of aux, gelu_out) starts in batch z.
uint c_row(uint r, uint z) { return at(r, 0, pc.c_off, pc.c_bs, pc.c_ld, pc.c_g, pc.c_gs, z); }

// C(r, col) of batch z, element ci, = the epilogue steps (interface.h, SMOE_EPI_*) applied to alpha * acc.
void store_c(uint ci, uint r, uint col, uint z, float acc)
{
    float v = acc * pc.alpha;
    if ((EPI & SMOE_EPI_ROWSCALE) != 0) v *= rowscale[z * pc.rs_bs + r];
    uint cs = z * pc.cs_bs + col, bi = z * pc.bias_bs + col;
    if ((EPI & SMOE_EPI_COLSCALE) != 0) v *= colscale4[cs >> 2][cs & 3u];
    if ((EPI & SMOE_EPI_SCALAR) != 0) v *= scalar[0];
    if ((EPI & SMOE_EPI_BIAS) != 0) v += bias4[bi >> 2][bi & 3u];
    if ((EPI & SMOE_EPI_GELU_GRAD) != 0) v *= gelu_grad(aux4[ci >> 2][ci & 3u]);
    if ((EPI & SMOE_EPI_ACCUMULATE) != 0) v += c4[ci >> 2][ci & 3u];
    c4[ci >> 2][ci & 3u] = v;
    if ((EPI & SMOE_EPI_STORE_GELU) != 0) gelu4[ci >> 2][ci & 3u] = gelu(v);
}

// store_c of columns col..col+3 at once: ci, z * cs_bs + col and z * bias_bs + col multiples of 4.
void store_c4(uint ci, uint r, uint col, uint z, vec4 acc)
{
    vec4 v = acc * pc.alpha;
    if ((EPI & SMOE_EPI_ROWSCALE) != 0) v *= rowscale[z * pc.rs_bs + r];
    if ((EPI & SMOE_EPI_COLSCALE) != 0) v *= colscale4[(z * pc.cs_bs + col) >> 2];
    if ((EPI & SMOE_EPI_SCALAR) != 0) v *= scalar[0];
    if ((EPI & SMOE_EPI_BIAS) != 0) v += bias4[(z * pc.bias_bs + col) >> 2];
    if ((EPI & SMOE_EPI_GELU_GRAD) != 0) {
        vec4 a = aux4[ci >> 2];
        v *= vec4(gelu_grad(a.x), gelu_grad(a.y), gelu_grad(a.z), gelu_grad(a.w));
    }
    if ((EPI & SMOE_EPI_ACCUMULATE) != 0) v += c4[ci >> 2];
    c4[ci >> 2] = v;
    if ((EPI & SMOE_EPI_STORE_GELU) != 0) gelu4[ci >> 2] = vec4(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
}
