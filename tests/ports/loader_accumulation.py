"""Port 3: a TensorDataset DataLoader with gradient accumulation, gradient clipping and a frozen
first layer.

Plain PyTorch. tests/ports/test_ports.py runs it under torch and, with only the import lines changed,
under gpunn, and compares what train() returns. (shuffle=False: the two frameworks' generators
differ, and the comparison needs the same batches.)
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(n=48):
    X = torch.linspace(-1, 1, n * 4).reshape(n, 4)
    X = X * torch.tensor([1.0, -2.0, 0.5, 3.0])
    y = (X.sum(dim=1) > 0.2).long()
    return X, y


def build_model():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def train(model, epochs=6, accumulation_steps=3):
    X, y = make_data()
    loader = DataLoader(TensorDataset(X, y), batch_size=8, shuffle=False)
    for param in model[0].parameters():  # keep the first layer fixed
        param.requires_grad = False
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2)
    criterion = nn.CrossEntropyLoss()
    frozen = model[0].weight.detach().clone()
    losses, norms = [], []
    for epoch in range(epochs):
        running_loss = 0.0
        optimizer.zero_grad()
        for step, (xb, yb) in enumerate(loader):
            loss = criterion(model(xb), yb) / accumulation_steps
            loss.backward()
            running_loss += loss.item()
            if (step + 1) % accumulation_steps == 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
                norms.append(norm.item())
                optimizer.step()
                optimizer.zero_grad()
        losses.append(running_loss)
    return {"losses": losses, "grad_norms": norms, "frozen_unchanged": bool(torch.equal(frozen, model[0].weight)),
            "frozen_has_no_grad": model[0].weight.grad is None, "batches": len(loader)}
