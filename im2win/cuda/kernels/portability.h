/* Portability prelude: lets one kernel source compile as CUDA C++ (NVRTC) and as OpenCL C (PoCL on
 * the CPU, for verification without a GPU). Kernels use only these macros for everything that differs
 * between the two languages. */
#ifdef __OPENCL_VERSION__
#define KERNEL __kernel
#define GLOBAL __global
#define CONST_GLOBAL __global const
#define SHARED __local
#define SYNC() barrier(CLK_LOCAL_MEM_FENCE)
#define THREAD_ID ((int)get_local_id(0))
#define BLOCK_ID_X ((int)get_group_id(0))
#define BLOCK_ID_Y ((int)get_group_id(1))
#define BLOCK_ID_Z ((int)get_group_id(2))
#define GLOBAL_ID ((i64)get_global_id(0))
#define LOAD4(p) vload4(0, (p))
#define STORE4(p, v) vstore4((v), 0, (p))
#define STORE2(p, a, b) vstore2((float2)((a), (b)), 0, (p))
#define MAKE4(a, b, c, d) ((float4)((a), (b), (c), (d)))
#define ALIGN16
#define DEVICE inline
#define LAUNCH_BOUNDS(threads, min_blocks) __attribute__((reqd_work_group_size(threads, 1, 1)))
typedef long i64;
/* cp.async has no OpenCL counterpart: the emulation copies at once (same values, same barriers). */
#define CP_ASYNC4(dst, src, valid) (*(dst) = (valid) ? *(src) : 0.0f)
#define CP_ASYNC16(dst, src) vstore4(vload4(0, (src)), 0, (dst))
#define CP_ASYNC_COMMIT()
#define CP_ASYNC_WAIT(pending)
#else
#define KERNEL extern "C" __global__
#define GLOBAL
#define CONST_GLOBAL const
#define SHARED __shared__
#define SYNC() __syncthreads()
#define THREAD_ID ((int)threadIdx.x)
#define BLOCK_ID_X ((int)blockIdx.x)
#define BLOCK_ID_Y ((int)blockIdx.y)
#define BLOCK_ID_Z ((int)blockIdx.z)
#define GLOBAL_ID ((i64)blockIdx.x * blockDim.x + threadIdx.x)
#define LOAD4(p) (*(const float4*)(p))
#define STORE4(p, v) (*(float4*)(p) = (v))
#define STORE2(p, a, b) (*(float2*)(p) = make_float2((a), (b)))
#define MAKE4(a, b, c, d) make_float4((a), (b), (c), (d))
#define ALIGN16 __align__(16)
#define DEVICE __device__ __forceinline__
#define LAUNCH_BOUNDS(threads, min_blocks) __launch_bounds__(threads, min_blocks)
typedef long long i64;
/* sm_80+ asynchronous global -> shared copies (cp.async, PTX ISA 7.0): 4 bytes (zero-filled when
 * not valid: src-size 0 reads nothing) or 16 bytes, bypassing the registers. */
#define CP_ASYNC4(dst, src, valid)                                                          \
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(                    \
                   (unsigned)__cvta_generic_to_shared(dst)),                                 \
               "l"(src), "r"((valid) ? 4 : 0))
#define CP_ASYNC16(dst, src)                                                                 \
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(                       \
                   (unsigned)__cvta_generic_to_shared(dst)),                                 \
               "l"(src))
#define CP_ASYNC_COMMIT() asm volatile("cp.async.commit_group;\n" ::)
/* wait until at most `pending` (a constant) of this thread's newest copy groups are in flight */
#define CP_ASYNC_WAIT(pending) asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory")
#endif
