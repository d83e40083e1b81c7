"""Port 2: a regression with mini-batches, SGD with momentum and a StepLR schedule.

Plain PyTorch. tests/ports/test_ports.py runs it under torch and, with only the import lines changed,
under gpunn, and compares what train() returns.
"""

import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR


def make_data(n=64):
    x = torch.linspace(-2, 2, n).unsqueeze(1)
    y = 0.5 * x ** 3 - x + 0.25
    return x, y


def build_model():
    return nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))


def train(model, epochs=24, batch_size=16):
    x, y = make_data()
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = StepLR(optimizer, step_size=8, gamma=0.5)
    losses, lrs = [], []
    for epoch in range(epochs):
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        scheduler.step()
        losses.append(total / len(x))
        lrs.append(scheduler.get_last_lr()[0])
    return {"losses": losses, "lrs": lrs}
