// Helpers shared by the shaders.

// GELU, tanh form (docs/format.md), and its derivative. tanh is evaluated on a clamped argument: some
// drivers compute it as a ratio of exponentials that overflows to inf/inf for large inputs.
const float GELU_K = 0.7978845608028654; // sqrt(2/pi)
const float GELU_C = 0.044715;

float safe_tanh(float x) { return tanh(clamp(x, -15.0, 15.0)); }

float gelu(float a)
{
    return 0.5 * a * (1.0 + safe_tanh(GELU_K * (a + GELU_C * a * a * a)));
}

float gelu_grad(float a)
{
    float t = safe_tanh(GELU_K * (a + GELU_C * a * a * a));
    return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * a * a);
}

// Linear index of a workgroup in a 2D grid: counts above maxComputeWorkGroupCount[0] are split
// by the host into (x, y) with groups_x in x.
uint group_linear(uint groups_x) { return gl_WorkGroupID.y * groups_x + gl_WorkGroupID.x; }

// ---- ViT ops (host/ops/vit_ops.c) ----

// Index of this invocation in a 1D range of items laid over a 2D grid of 1D workgroups of wg
// invocations (pass gl_WorkGroupSize.x from main, after the local_size layout).
uint item_linear(uint groups_x, uint wg) { return group_linear(groups_x) * wg + gl_LocalInvocationID.x; }

// Workgroup-wide sum and max over the x dimension (a power of two), every invocation getting the
// result. A shader that wants them defines SMOE_WG_REDUCE and includes this file after its
// local_size layout; all invocations must call them (uniform control flow).
#ifdef SMOE_WG_REDUCE
// Row kernels (SMOE_ROW_KERNEL: one row or column of a matrix per workgroup) can instead give
// each invocation a vector of its own (ROW_SERIAL, constant SMOE_ROW_SERIAL_ID): no shared memory,
// no barrier, which is what drivers that run shaders on the CPU want (gpu->row_serial). The
// reductions are then the invocation's own sums. Their loops: for (i = row_lane(); i < n; i += row_step()).
#ifdef SMOE_ROW_KERNEL
layout(constant_id = SMOE_ROW_SERIAL_ID) const uint ROW_SERIAL = 0;
uint row_of(uint groups_x) { return ROW_SERIAL != 0 ? item_linear(groups_x, gl_WorkGroupSize.x) : group_linear(groups_x); }
uint row_lane() { return ROW_SERIAL != 0 ? 0 : gl_LocalInvocationID.x; }
uint row_step() { return ROW_SERIAL != 0 ? 1 : gl_WorkGroupSize.x; }
#else
const uint ROW_SERIAL = 0;
#endif

shared float smoe_red[gl_WorkGroupSize.x];

float wg_sum(float v)
{
    if (ROW_SERIAL != 0) return v;
    uint t = gl_LocalInvocationID.x;
    smoe_red[t] = v;
    barrier();
    for (uint w = gl_WorkGroupSize.x / 2; w > 0; w /= 2) {
        if (t < w) smoe_red[t] += smoe_red[t + w];
        barrier();
    }
    float r = smoe_red[0];
    barrier();
    return r;
}

float wg_max(float v)
{
    if (ROW_SERIAL != 0) return v;
    uint t = gl_LocalInvocationID.x;
    smoe_red[t] = v;
    barrier();
    for (uint w = gl_WorkGroupSize.x / 2; w > 0; w /= 2) {
        if (t < w) smoe_red[t] = max(smoe_red[t], smoe_red[t + w]);
        barrier();
    }
    float r = smoe_red[0];
    barrier();
    return r;
}
#endif

// Workgroup-wide uint sum and exclusive prefix sum (in invocation order) over the x dimension (a
// power of two): a shader that wants them defines SMOE_WG_SCAN and includes this file after its
// local_size layout; all invocations must call them (uniform control flow).
#ifdef SMOE_WG_SCAN
shared uint smoe_scan[gl_WorkGroupSize.x];

// The sum of v over the invocations before this one; total gets the sum over all.
uint wg_scan_exclusive(uint v, out uint total)
{
    uint t = gl_LocalInvocationID.x;
    smoe_scan[t] = v;
    barrier();
    for (uint off = 1; off < gl_WorkGroupSize.x; off *= 2) {
        uint add = t >= off ? smoe_scan[t - off] : 0u;
        barrier();
        smoe_scan[t] += add;
        barrier();
    }
    uint inclusive = smoe_scan[t];
    total = smoe_scan[gl_WorkGroupSize.x - 1];
    barrier();
    return inclusive - v;
}

uint wg_sum_uint(uint v)
{
    uint total;
    wg_scan_exclusive(v, total);
    return total;
}
#endif
