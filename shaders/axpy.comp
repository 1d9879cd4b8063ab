#version 450
// y = alpha * x + beta * y, elementwise over n floats.
#extension GL_GOOGLE_include_directive : require
#include "common/interface.h"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
SMOE_PUSH(SMOE_PUSH_AXPY)

void main()
{
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i < pc.n) y[i] = pc.alpha * x[i] + pc.beta * y[i];
}
