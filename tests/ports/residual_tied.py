"""Port 4: a small residual language model whose output layer shares the embedding's weight.

Plain PyTorch. tests/ports/test_ports.py runs it under torch and, with only the import lines changed,
under gpunn, and compares what train() returns.
"""

import torch
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return x + self.ff(self.norm(x))


class TinyLM(nn.Module):
    def __init__(self, vocab=12, dim=16, depth=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # weight tying

    def forward(self, tokens):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


VOCAB = 12


def make_data():
    sequence = torch.tensor([(5 * i + 3) % VOCAB for i in range(64)])
    batch = sequence.reshape(4, 16)
    return batch[:, :-1], batch[:, 1:]


def build_model():
    return TinyLM(vocab=VOCAB)


def train(model, epochs=25):
    inputs, targets = make_data()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    n_params = sum(p.numel() for p in model.parameters())
    return {"losses": losses, "tied": model.head.weight is model.embed.weight, "parameters": n_params}
