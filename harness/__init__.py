"""The measurement harness: the ground floor every other package of the suite may import.

    timing       wall-clock and CUDA-event timing, thread counts
    results      run files (JSON + CSV) with provenance, atomic writes
    environment  hardware, software versions and the code's revision
    memory       peak resident memory of a call
    peak         the CPU's measured FP32 FMA peak (peak.cpp)
    native       compiling and caching C++ sources for this host
    tuner        the OpenTuner ask/tell loop
    device       a user's --device string resolved to a torch.device
    args         argparse types shared by the command lines

It imports nothing from the rest of the project.
"""
