#version 450
// Peak FMA throughput: every invocation runs ITERS rounds of 8 independent vec4 FMA chains and
// writes one value so the work cannot be optimised away. 64 FLOP per round per invocation.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint ITERS = 1024;
layout(std430, binding = 0) writeonly buffer Out { float o[]; };

void main()
{
    vec4 a0 = vec4(gl_GlobalInvocationID.x) * 1e-9, a1 = a0 + 1e-9, a2 = a0 + 2e-9, a3 = a0 + 3e-9;
    vec4 a4 = a0 + 4e-9, a5 = a0 + 5e-9, a6 = a0 + 6e-9, a7 = a0 + 7e-9;
    const vec4 m = vec4(0.999999), c = vec4(1e-7);
    for (uint i = 0; i < ITERS; i++) {
        a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
        a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    }
    vec4 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    if (s.x == 12345.678) o[gl_GlobalInvocationID.x] = s.y; // practically never; keeps the chains live
    o[0] = s.w * 0.0;
}
