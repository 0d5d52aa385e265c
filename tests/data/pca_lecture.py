# The lecture's numpy PCA / whitening on a fixed small data set; prints Rust constants.
import numpy as np
X = np.array([
    [2.5, 2.4, 0.5, 1.0],
    [0.5, 0.7, 1.5, -1.0],
    [2.2, 2.9, 0.2, 0.5],
    [1.9, 2.2, 0.9, 0.0],
    [3.1, 3.0, -0.3, 1.5],
    [2.3, 2.7, 0.4, 0.25],
    [2.0, 1.6, 1.1, -0.5],
    [1.0, 1.1, 1.2, -0.75],
    [1.5, 1.6, 0.8, 0.1],
    [1.1, 0.9, 1.3, -0.2],
])
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
