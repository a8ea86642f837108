"""PNG plots of training and evaluation, drawn with matplotlib's Agg canvas (no window, no global pyplot state)."""

import numpy as np

from models.fileio import atomic_path


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_training_curve(history, path):
    """Loss and training accuracy per epoch (the original's "training error graph")."""
    epochs = [entry["epoch"] for entry in history]
    fig = _figure(9, 3.5)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [entry["loss"] for entry in history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="mean cross-entropy")
    acc_ax.plot(epochs, [entry["accuracy"] for entry in history], marker="o", color="tab:green")
    acc_ax.set(title="training accuracy", xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def plot_confusion_matrix(matrix, classes, path):
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.asarray(matrix)
    size = 2.5 + 0.8 * len(classes)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
           xlabel="predicted class", ylabel="true class", title="confusion matrix")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    _save(fig, path)


def plot_roc(curves, path):
    """``curves``: [(label, false positive rates, true positive rates, auc)]."""
    fig = _figure(5, 5)
    ax = fig.subplots()
    for label, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def plot_predictions(images, true_classes, probabilities, classes, path, columns=5):
    """A grid of images, each captioned with its true class and the predicted probabilities (green: right)."""
    rows = max(1, -(-len(images) // columns))
    fig = _figure(2.6 * columns, 3.1 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, truth, probs in zip(axes, images, true_classes, probabilities):
        ax.imshow(image)
        top = np.argsort(probs)[::-1][:3]
        caption = f"true: {truth}\n" + "\n".join(f"{classes[i]}: {probs[i]:.2f}" for i in top)
        ax.set_title(caption, fontsize=8, color="tab:green" if classes[top[0]] == truth else "tab:red")
    fig.suptitle("some predictions")
    _save(fig, path)
