"""Renders the figures of docs/figures/ (the gallery of calix.plot) from shipped data.

Run: .venv/bin/python docs/figures/render.py
"""

import time
import numpy as np
import torch
from torch import nn
from sklearn.linear_model import LogisticRegression

from calix import data
from calix import plot
from calix.explain import IntegratedGradients, KernelSHAP, Occlusion, LogitSurrogateSHAP, Saliency
from calix.models import wrap
from calix.perturb import Constant, Superpixels
from calix.uncertainty import MCDropout, explanation_distribution

t0 = time.time()
out = str(__import__("pathlib").Path(__file__).resolve().parent)
# ---------------- tabular: breast_cancer, LogisticRegression, KernelSHAP / LogitSurrogateSHAP
bc = data.load("breast_cancer", seed=0)
clf = LogisticRegression(max_iter=1000).fit(bc.X_train, bc.y_train)
X = bc.X_test[:80]
exp = KernelSHAP(clf, n_samples=512, fill=Constant(0.0)).explain(X)
exp.feature_names, exp.class_names, exp.data = bc.feature_names, bc.class_names, X
print(exp, time.time() - t0)
plot.summary_bar(exp, path=f"{out}/summary_bar.png")
plot.beeswarm(exp, path=f"{out}/beeswarm.png")
plot.explanation_figure(exp[:4], max_features=8, path=f"{out}/tabular_batch.png",
                        title="KernelSHAP, breast_cancer")
poly = LogitSurrogateSHAP(clf, n_samples=400, fill=Constant(0.0)).explain(X[:3])
poly.feature_names, poly.class_names, poly.data = bc.feature_names, bc.class_names, X[:3]
print(poly)
plot.attribution_bars(poly, index=0, max_features=12, path=f"{out}/bars_intervals.png",
                      title="LogitSurrogateSHAP, 95% interval")
import matplotlib.pyplot as plt
import shap; plt.close("all")
sx = exp.to_shap()
shap.plots.beeswarm(sx, show=False); plt.gcf().savefig(f"{out}/shap_beeswarm.png", bbox_inches="tight"); plt.close("all")
shap.plots.waterfall(sx[0], show=False); plt.gcf().savefig(f"{out}/shap_waterfall.png", bbox_inches="tight"); plt.close("all")

# tabular distribution: MLP with dropout, Saliency under MC-dropout
torch.manual_seed(0)
mlp = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
opt = torch.optim.Adam(mlp.parameters(), 1e-2)
Xt, yt = torch.tensor(bc.X_train), torch.tensor(bc.y_train)
for _ in range(150):
    opt.zero_grad(); nn.functional.cross_entropy(mlp(Xt), yt).backward(); opt.step()
mlp.eval()
m = wrap(mlp, input_shape=(30,))
dtab = explanation_distribution(Saliency(m, output="logit"), MCDropout(m, n_samples=30, seed=0), X[:4])
dtab.feature_names, dtab.class_names = bc.feature_names, bc.class_names
plot.distribution_figure(dtab, max_features=12, path=f"{out}/distribution_tabular.png",
                         title="Saliency under MC-Dropout")

# ---------------- images: digits, tiny CNN with dropout
dg = data.load("digits", seed=0)
torch.manual_seed(0)
cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                    nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                    nn.Linear(16 * 64, 10))
opt = torch.optim.Adam(cnn.parameters(), 3e-3)
Xi, yi = torch.tensor(dg.X_train), torch.tensor(dg.y_train)
for step in range(200):
    idx = torch.randint(0, len(Xi), (128,))
    opt.zero_grad(); nn.functional.cross_entropy(cnn(Xi[idx]), yi[idx]).backward(); opt.step()
cnn.eval()
acc = (cnn(torch.tensor(dg.X_test)).argmax(1).numpy() == dg.y_test).mean()
print("digits acc", acc, time.time() - t0)
mi = wrap(cnn, input_shape=(1, 8, 8))
xi = dg.X_test[:8]
ig = IntegratedGradients(mi, n_steps=32).explain(xi)
ig.class_names, ig.data = dg.class_names, xi
plot.explanation_figure(ig[0], path=f"{out}/image_single.png", title="IG, digits")
plot.explanation_figure(xi, ig, path=f"{out}/image_batch.png", title="IG, digits")
plot.overlay(None, ig, index=1, path=f"{out}/overlay.png")
occ = Occlusion(mi, features=Superpixels(12, compactness=0.1), fill=Constant(0.0)).explain(xi[:2])
occ.class_names, occ.data = dg.class_names, xi[:2]
print(occ)
plot.feature_boundaries(None, occ, path=f"{out}/boundaries.png")
plot.feature_boundaries(xi[0], occ, show_values=False, path=f"{out}/boundaries_plain.png")
dimg = explanation_distribution(IntegratedGradients(mi, n_steps=16),
                                MCDropout(mi, n_samples=20, seed=0), xi[:2])
dimg.class_names, dimg.data = dg.class_names, xi[:2]
print(dimg)
plot.distribution_figure(dimg, path=f"{out}/distribution_image.png",
                         title="IG under MC-Dropout")
print("done", time.time() - t0)
