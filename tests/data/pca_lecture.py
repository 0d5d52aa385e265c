# The lecture's numpy PCA / whitening on a fixed small data set; prints Rust constants.
import numpy as np
from pathlib import Path
# the data set, which tests/pca.rs reads too
X = np.loadtxt(Path(__file__).with_name("pca_lecture.csv"), delimiter=",")
X -= np.mean(X, axis=0)  # zero-center the data (important)
cov = np.dot(X.T, X) / X.shape[0]  # get the data covariance matrix
U, S, V = np.linalg.svd(cov)
Xrot = np.dot(X, U)  # decorrelate the data
Xrot_reduced = np.dot(X, U[:, :2])  # Xrot_reduced becomes [N x 2]
Xwhite = Xrot / np.sqrt(S + 1e-5)
Xzca = np.dot(Xwhite, U.T)
def rs(name, a):
    a = np.atleast_2d(a)
    rows = ",\n".join("    [" + ", ".join(repr(float(v)) for v in r) + "]" for r in a)
    print(f"const {name}: [[f64; {a.shape[1]}]; {a.shape[0]}] = [\n{rows},\n];")
rs("COV", cov); rs("S", S); rs("U", U); rs("XROT", Xrot); rs("XROT_REDUCED", Xrot_reduced); rs("XWHITE", Xwhite); rs("XZCA", Xzca)
