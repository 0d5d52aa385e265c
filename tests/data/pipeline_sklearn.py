# scikit-learn references for gpuprep's pipelines under --convention sklearn
# (tests/pipeline_refs.rs). Run: python3 tests/data/pipeline_sklearn.py
# Writes tests/data/sklearn/*.npy (float64). scikit-learn 1.x, numpy 2.x.
import os
import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sklearn")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(231)
z = rng.standard_normal((80, 5))
mix = np.triu(1.0 / (1.0 + np.abs(np.subtract.outer(np.arange(5), np.arange(5)))))
x = z @ mix * np.array([1.0, 2.0, 0.5, 3.0, 1.5]) + np.array([10.0, -3.0, 0.0, 1e3, 5.0])
train, test = x[:60], x[60:]
np.save(os.path.join(out, "train.npy"), train)
np.save(os.path.join(out, "test.npy"), test)

cases = {
    "scaler": make_pipeline(StandardScaler()),
    "center": make_pipeline(StandardScaler(with_std=False)),
    "scale": make_pipeline(StandardScaler(with_mean=False)),
    "pca3": make_pipeline(PCA(n_components=3)),
    "scaled_pca3": make_pipeline(StandardScaler(), PCA(n_components=3)),
    "scaled_pca_frac": make_pipeline(StandardScaler(), PCA(n_components=0.9)),
    "whiten_all": make_pipeline(PCA(whiten=True)),
    "scaled_whiten2": make_pipeline(StandardScaler(), PCA(n_components=2, whiten=True)),
}
for name, p in cases.items():
    p.fit(train)
    y = p.transform(test)
    np.save(os.path.join(out, f"{name}_test.npy"), y)
    np.save(os.path.join(out, f"{name}_inverse.npy"), p.inverse_transform(y))
    pca = p.steps[-1][1]
    if isinstance(pca, PCA):
        np.save(os.path.join(out, f"{name}_explained_variance.npy"), pca.explained_variance_)
        np.save(os.path.join(out, f"{name}_components.npy"), pca.components_)

# Rank-deficient whitening: column 2 = column 0 + column 1 (one zero variance).
rd = train.copy()
rd[:, 2] = rd[:, 0] + rd[:, 1]
np.save(os.path.join(out, "rank_train.npy"), rd)
p = PCA(whiten=True).fit(rd)
np.save(os.path.join(out, "rank_whiten_train.npy"), p.transform(rd)[:, :4])
np.save(os.path.join(out, "rank_explained_variance.npy"), p.explained_variance_)

# The fraction tie: explained variance ratios exactly 0.75, 0.25.
tie = np.array([[np.sqrt(3.0), 0.0], [-np.sqrt(3.0), 0.0], [0.0, 1.0], [0.0, -1.0]])
np.save(os.path.join(out, "tie.npy"), tie)
np.save(os.path.join(out, "tie_n_components.npy"), np.array([float(PCA(n_components=0.75).fit(tie).n_components_)]))
print("scikit-learn", sklearn.__version__, "numpy", np.__version__, "->", out)
