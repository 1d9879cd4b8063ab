// Helpers shared by the shaders.

// GELU, tanh form (SPEC), and its derivative. tanh is evaluated on a clamped argument: some
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
