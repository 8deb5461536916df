//! Code generation: pattern IR + KernelPlan -> LLVM IR -> PTX.
