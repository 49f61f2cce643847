"""PyTorch's own SimpleCNN training step (batch 64, Adam) and batch-1 inference, alone on
2 threads, with libgomp's default spinning or GOMP_SPINCOUNT=1000 (read when torch loads).
Run both, twice, alternately:
    for i in 1 2; do python bench/results/scripts/torch_spincount.py;
                     GOMP_SPINCOUNT=1000 python bench/results/scripts/torch_spincount.py; done
Output of such a run: bench/results/torch-spincount-20261207.txt.
"""
import os, sys, time
import numpy as np, torch
torch.set_num_threads(2)
nn=torch.nn
m=nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
opt=torch.optim.Adam(m.parameters(), lr=1e-3)
x=torch.rand(64,1,28,28); y=torch.randint(0,10,(64,))
def step():
    opt.zero_grad(); loss=torch.nn.functional.cross_entropy(m(x),y); loss.backward(); opt.step()
for i in range(10): step()
ts=[]
for i in range(60):
    s=time.perf_counter(); step(); ts.append(time.perf_counter()-s)
m.eval(); x1=torch.rand(1,1,28,28); tl=[]
with torch.no_grad():
    for i in range(200):
        s=time.perf_counter(); m(x1); tl.append(time.perf_counter()-s)
print(os.environ.get("GOMP_SPINCOUNT","default"), "step median ms %.2f  b1 infer ms %.3f" % (np.median(ts)*1e3, np.median(tl)*1e3))
