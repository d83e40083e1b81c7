"""The shortest full training script: an MLP on the 8x8 digits with Adam and mini-batches."""

import matplotlib.pyplot as plt

import gpunn
from gpunn import nn, optim
from gpunn.data import DataLoader
from gpunn.datasets import load_digits, train_test_split
from common import parse_args, save

args = parse_args(__doc__, "train_digits")
X_train, X_test, y_train, y_test = train_test_split(*load_digits(), test_size=0.25, seed=args.seed)
loader = DataLoader(X_train, y_train, batch_size=64, shuffle=True, device=args.device, seed=args.seed)
X_test, y_test = gpunn.tensor(X_test, device=args.device), gpunn.tensor(y_test, device=args.device)
model = nn.MLP([64, 128, 10], device=args.device)
opt = optim.Adam(model.parameters(), lr=1e-3)
accuracies = []
for epoch in range(5 if args.quick else 30):
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with gpunn.no_grad():
        accuracies.append((model(X_test).argmax(axis=1) == y_test).float().mean().item())
    print(f"epoch {epoch + 1:2d}  last batch loss {loss.item():.3f}  test accuracy {accuracies[-1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(range(1, len(accuracies) + 1), accuracies, "o-")
ax.set(xlabel="epoch", ylabel="test accuracy", title="MLP 64-128-10 on the 8x8 digits")
save(fig, args, "train_digits.png")
