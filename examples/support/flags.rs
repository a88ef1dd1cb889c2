//! Checks of numeric flags, made before any work so that a typo costs no training time.

/// `Ok` when `value` is finite and above zero, otherwise an error naming the flag: checked before any work.
pub fn positive(flag: &str, value: f64) -> Result<(), Box<dyn std::error::Error>> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{flag} must be a finite number above 0, got {value}").into())
    }
}

/// `Ok` when a count flag is at least 1.
pub fn at_least_one(flag: &str, value: usize) -> Result<(), Box<dyn std::error::Error>> {
    if value >= 1 {
        Ok(())
    } else {
        Err(format!("{flag} must be at least 1").into())
    }
}
