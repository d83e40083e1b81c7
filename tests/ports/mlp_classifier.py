"""Port 1: an MLP classifier: nn.Sequential inside a custom Module, Adam, eval with no_grad.

Plain PyTorch. tests/ports/test_ports.py runs it under torch and, with only the import lines changed,
under gpunn, and compares what train() returns.
"""

import torch
from torch import nn
import torch.nn.functional as F


class Classifier(nn.Module):
    def __init__(self, in_features=2, hidden=16, classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.features(x))


def make_data(n=60):
    t = torch.linspace(-1, 1, n)
    x = torch.stack([t, t * t - 0.5 + 0.3 * torch.linspace(1, -1, n)], dim=1)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 0).long()
    return x, y


def build_model():
    return Classifier()


def train(model, epochs=30):
    x, y = make_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predictions = model(x).argmax(dim=1)
        accuracy = (predictions == y).float().mean().item()
    return {"losses": losses, "accuracy": accuracy}
