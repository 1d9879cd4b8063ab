// What every matmul variant shares: the two-level operand addressing and the epilogue, with the
// buffers it uses (bindings 2-4 and 6-9; 0, 1 and 5 are the operands and statistics, whose kind
// differs between variants). Include after the push constants and the EPI constant.
layout(std430, binding = 2) buffer BufC { float c[]; };
layout(std430, binding = 3) readonly buffer BufBias { float bias[]; };
layout(std430, binding = 4) readonly buffer BufAux { float aux[]; };
layout(std430, binding = 6) readonly buffer BufRowScale { float rowscale[]; };
layout(std430, binding = 7) readonly buffer BufColScale { float colscale[]; };
layout(std430, binding = 8) readonly buffer BufScalar { float scalar[]; };
layout(std430, binding = 9) writeonly buffer BufGelu { float gelu_out[]; };

// Element (r, col) of batch z of a stored operand (interface.h, SMOE_PUSH_MATMUL).
uint at(uint r, uint col, uint off, uint bs, uint ld, uint g, uint gs, uint z)
{
    return off + z * bs + (r / g) * gs + (r % g) * ld + col;
}

// C(r, col) of batch z = the epilogue steps (interface.h, SMOE_EPI_*) applied to alpha * acc.
void store_c(uint r, uint col, uint z, float acc)
{
    float v = acc * pc.alpha;
    if ((EPI & SMOE_EPI_ROWSCALE) != 0) v *= rowscale[z * pc.rs_bs + r];
    if ((EPI & SMOE_EPI_COLSCALE) != 0) v *= colscale[z * pc.cs_bs + col];
    if ((EPI & SMOE_EPI_SCALAR) != 0) v *= scalar[0];
    if ((EPI & SMOE_EPI_BIAS) != 0) v += bias[z * pc.bias_bs + col];
    uint ci = at(r, col, pc.c_off, pc.c_bs, pc.c_ld, pc.c_g, pc.c_gs, z);
    if ((EPI & SMOE_EPI_GELU_GRAD) != 0) v *= gelu_grad(aux[ci]);
    if ((EPI & SMOE_EPI_ACCUMULATE) != 0) v += c[ci];
    c[ci] = v;
    if ((EPI & SMOE_EPI_STORE_GELU) != 0) gelu_out[ci] = gelu(v);
}
