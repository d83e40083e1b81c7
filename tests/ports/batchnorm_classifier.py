"""Port 5: a classifier with BatchNorm1d, trained in train() mode and evaluated in eval() mode.

Plain PyTorch. tests/ports/test_ports.py runs it under torch and, with only the import lines changed,
under gpunn, and compares what train() returns.
"""

import torch
from torch import nn


def make_data(n=64):
    t = torch.linspace(0, 1, n)
    X = torch.stack([10 * t + 3, t * t - 2, 5 - 4 * t], dim=1)  # features far from zero mean
    y = (t > 0.45).long()
    return X, y


def build_model():
    return nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def train(model, epochs=8, batch_size=16):
    X, y = make_data()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(epochs):
        model.train()
        for start in range(0, len(X), batch_size):
            optimizer.zero_grad()
            loss = criterion(model(X[start:start + batch_size]), y[start:start + batch_size])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        eval_loss = criterion(model(X), y).item()
        accuracy = (model(X).argmax(dim=1) == y).float().mean().item()
    bn = model[1]
    return {"losses": losses, "eval_loss": eval_loss, "accuracy": accuracy,
            "running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist(),
            "batches_tracked": int(bn.num_batches_tracked)}
