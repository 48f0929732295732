"""The machine a run trains on: the device and its speed settings (:mod:`~tl_core.runtime.device`)
and the CPU memory allocator setting used while training (:mod:`~tl_core.runtime.allocator`)."""
