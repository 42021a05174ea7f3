"""bf16 autocast vs fp32 (and channels_last) for one training step of the shipped MNIST U-Net on this CPU,
side by side in one process: the figures behind recipes/mnist-ddpm-cpu-ext.toml.

    OMP_NUM_THREADS=1 python benchmarks/train_amp.py 64
"""
import sys
import time

import torch
torch.set_num_threads(1)
from difflab.loading import load_any
lm = load_any("mnist-ddpm")
net = lm.model.net if hasattr(lm.model,'net') else lm.model
print(type(lm.model).__name__, type(net).__name__)
net.train()
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
B=int(sys.argv[1]) if len(sys.argv)>1 else 64
x = torch.randn(B,1,28,28); t = torch.randint(0,1000,(B,))
for amp in ["none","bf16","none_cl"]:
    m = net
    xx = x
    if amp=="none_cl":
        m = net.to(memory_format=torch.channels_last); xx = x.contiguous(memory_format=torch.channels_last)
    for i in range(8):
        if i==3: t0=time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp=="bf16"):
            out = m(xx, t)
            loss = (out.float()-x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    dt=(time.perf_counter()-t0)/5
    print(amp, B, f"{dt*1000:.0f} ms/step  {B/dt:.0f} img/s")
