use kvant_tensor::Tensor;

/// Sees the values a run produces, in execution order, and may replace chosen ones.
///
/// The executor calls [`ValueHook::on_value`] for every graph input and every node output of
/// the main graph (not for initializers, and not inside If / Loop / Scan bodies). Returning
/// `Some(tensor)` replaces the value for every later consumer and for the graph's outputs; the
/// replacement must keep the element type and shape.
pub trait ValueHook: Send {
    /// Called once per produced value. Return a replacement to transform it in flight.
    fn on_value(&mut self, name: &str, value: &Tensor) -> Option<Tensor>;
}

/// A hook that does nothing.
pub struct NoHook;

impl ValueHook for NoHook {
    fn on_value(&mut self, _name: &str, _value: &Tensor) -> Option<Tensor> {
        None
    }
}

impl<F: FnMut(&str, &Tensor) -> Option<Tensor> + Send> ValueHook for F {
    fn on_value(&mut self, name: &str, value: &Tensor) -> Option<Tensor> {
        self(name, value)
    }
}
