"""PNG plots of training and evaluation, drawn with matplotlib's Agg canvas (no window, no global pyplot state)."""

import numpy as np

from models.fileio import atomic_path

OVERLAY_ALPHA = 0.45  # how much of a heatmap shows over the radiograph


def figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_training_curve(history, path, best=None, selection=None):
    """Loss and accuracy per epoch, training and (when there is one) validation; the best epoch marked. With the
    inner cross-validation's ``selection`` (head.json), a third panel: each layout's out-of-fold ROC-AUC with its 95%
    interval, the chosen one filled."""
    epochs = [entry["epoch"] for entry in history]
    validated = [entry for entry in history if entry.get("val_loss") is not None]
    candidates = (selection or {}).get("candidates") or {}
    fig = figure(13 if candidates else 9, 3.5)
    axes = fig.subplots(1, 3 if candidates else 2, width_ratios=[3, 3, 2] if candidates else None)
    loss_ax, acc_ax = axes[:2]
    if candidates:
        _plot_candidates(axes[2], candidates, selection["winner"], selection["folds"])
    loss_ax.plot(epochs, [entry["loss"] for entry in history], marker="o", label="training")
    acc_ax.plot(epochs, [entry["accuracy"] for entry in history], marker="o", label="training accuracy")
    if validated:
        val_epochs = [entry["epoch"] for entry in validated]
        loss_ax.plot(val_epochs, [entry["val_loss"] for entry in validated], marker="s", label="validation")
        acc_ax.plot(val_epochs, [entry["val_balanced_accuracy"] for entry in validated], marker="s",
                    label="validation balanced accuracy")
        aucs = [(entry["epoch"], entry["val_roc_auc"]) for entry in validated if entry.get("val_roc_auc") is not None]
        if aucs:
            acc_ax.plot(*zip(*aucs), marker="^", label="validation ROC-AUC")
    loss_ax.set(title="loss", xlabel="epoch", ylabel="mean cross-entropy (class-weighted)")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="score", ylim=(-0.02, 1.02))
    for ax in (loss_ax, acc_ax):
        if best is not None:
            ax.axvline(best, color="gray", linestyle=":", label=f"best epoch ({best})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    save_figure(fig, path)


def _plot_candidates(ax, candidates, winner, folds):
    names = list(candidates)
    for y, name in enumerate(names):
        row = candidates[name]
        low, high = row["ci95"]
        chosen = name == winner
        ax.errorbar(row["roc_auc"], y, xerr=[[row["roc_auc"] - low], [high - row["roc_auc"]]], fmt="o", capsize=4,
                    color="C2" if chosen else "C7", markerfacecolor="C2" if chosen else "white")
    ax.axvline(0.5, color="gray", linestyle=":")
    ax.set_yticks(range(len(names)), [f"{name} (chosen)" if name == winner else name for name in names])
    ax.set(title=f"layouts, {folds}-fold out-of-fold", xlabel="ROC-AUC, 95% CI", ylim=(-0.5, len(names) - 0.5))
    ax.grid(alpha=0.3)


def plot_confusion_matrix(matrix, classes, path):
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.asarray(matrix)
    size = 2.5 + 0.8 * len(classes)
    fig = figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
           xlabel="predicted class", ylabel="true class", title="confusion matrix")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    save_figure(fig, path)


def plot_roc(curves, path):
    """``curves``: [(label, false positive rates, true positive rates, auc, marks)], ``marks`` a list of
    (label, (false positive rate, true positive rate)) operating points drawn on the curve."""
    fig = figure(5, 5)
    ax = fig.subplots()
    for label, fpr, tpr, auc, marks in curves:
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        for (mark, (x, y)), style in zip(marks, ("o", "s", "^")):
            ax.plot([x], [y], marker=style, linestyle="none", markersize=8, label=f"{mark}: FPR {x:.2f}, TPR {y:.2f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    save_figure(fig, path)


def plot_reliability(scores, positive_class, path):
    """The reliability diagram: per bin of the predicted probability of ``positive_class``, the share of images that
    have it against the mean predicted, each point labelled with its count of images; the diagonal is calibration.
    ``scores``: ``metrics.probability_scores``."""
    fig = figure(5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="calibrated")
    filled = [row for row in scores["bins"] if row["images"]]
    ax.plot([row["mean_predicted"] for row in filled], [row["observed"] for row in filled], marker="o",
            label=f"test images (ECE {scores['ece']:.3f}, Brier {scores['brier']:.3f})")
    for row in filled:
        ax.annotate(str(row["images"]), (row["mean_predicted"], row["observed"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"predicted p({positive_class})",
           ylabel=f"observed share of {positive_class}", title="calibration (count of images per bin)")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_predictions(images, true_classes, predicted_classes, probabilities, classes, path, columns=5, maps=None,
                     boxes=None, title="some predictions"):
    """A grid of images, each captioned with its true class and the predicted probabilities; green where the
    predicted class (at the operating threshold) is right. With ``maps``, each image carries its heatmap; with
    ``boxes`` ((left, top, right, bottom) in the image's pixels, or None), a dashed box (the lung field)."""
    from matplotlib.patches import Rectangle

    rows = max(1, -(-len(images) // columns))
    fig = figure(2.6 * columns, 3.1 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for i, (ax, image, truth, guess, probs) in enumerate(zip(axes, images, true_classes, predicted_classes,
                                                          probabilities)):
        if maps is None:
            ax.imshow(image)
        else:
            draw_overlay(ax, image, maps[i])
        if boxes is not None and boxes[i] is not None:
            left, top, right, bottom = boxes[i]
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="white",
                                   linestyle="--", linewidth=1))
        top = np.argsort(probs)[::-1][:3]
        caption = f"true: {truth}, said: {guess}\n" + "\n".join(f"{classes[i]}: {probs[i]:.2f}" for i in top)
        ax.set_title(caption, fontsize=8, color="tab:green" if guess == truth else "tab:red")
    fig.suptitle(title)
    save_figure(fig, path)


def draw_overlay(ax, image, heat):
    """``image`` (the backbone's view, size x size) with ``heat`` upsampled over it; colours relative to its maximum."""
    size = image.shape[0]
    ax.imshow(image)
    top = float(heat.max())
    ax.imshow(heat / top if top > 0 else heat, cmap="jet", vmin=0, vmax=1, alpha=OVERLAY_ALPHA,
              interpolation="bilinear", extent=(0, size, size, 0))
    ax.axis("off")


def save_overlay(path, image, heat, title):
    """One image with its map, as a PNG of its own."""
    fig = figure(3.2, 3.5)
    ax = fig.subplots()
    draw_overlay(ax, image, heat)
    ax.set_title(title, fontsize=8)
    save_figure(fig, path)


def plot_distances(distances, unlike, threshold, path):
    """The input check on a test set: each image's distance from the training films as a dot (flagged ones in
    orange, above the dashed threshold), spread vertically by a fixed jitter so that equal distances stay apart."""
    distances, unlike = np.asarray(distances, float), np.asarray(unlike, bool)
    fig = figure(7, 2.2)
    ax = fig.subplots()
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(distances))
    ax.scatter(distances[~unlike], jitter[~unlike], s=18, color="C0", label="like the training films")
    if unlike.any():
        ax.scatter(distances[unlike], jitter[unlike], s=24, color="C1", label="flagged: unlike them")
    ax.axvline(threshold, color="gray", linestyle="--", label=f"threshold {threshold:.1f}")
    ax.set(yticks=[], ylim=(-0.5, 0.5), xlabel="distance from the training films (Mahalanobis)",
           xlim=(0, max(float(distances.max(initial=0)), threshold) * 1.08))
    ax.legend(loc="upper left", fontsize="small", ncol=3, bbox_to_anchor=(0, 1.3), frameon=False)
    save_figure(fig, path)
