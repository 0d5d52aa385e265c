//! The activation fused into the product kernel (`shaders/matmul.wgsl`) and its
//! f64 definition, shared by the GPU op and the CPU twin.

/// The elementwise function applied to each output of the product (`ops::matmul`, `cpu::matmul`) last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// No function: the affine product itself.
    #[default]
    Identity,
    /// `tanh(v)`.
    Tanh,
    /// `max(0, v)`; NaN stays NaN (as in PyTorch).
    Relu,
}

impl Activation {
    /// Apply it to one value.
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Activation::Identity => v,
            Activation::Tanh => v.tanh(),
            Activation::Relu => {
                if v.is_nan() {
                    v
                } else {
                    v.max(0.0)
                }
            }
        }
    }
}
