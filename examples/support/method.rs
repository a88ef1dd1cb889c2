//! `--method lora|dora|qlora|full`: what a fine-tuning example trains (finetune_gpt, finetune_llm).

/// What to train.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Method {
    /// A LoRA adapter on the target Linear layers.
    Lora,
    /// A DoRA adapter (LoRA's direction plus a trained magnitude per output feature).
    Dora,
    /// LoRA over the base's Linear weights quantized to 4 bits.
    Qlora,
    /// Every weight trains (no adapter).
    Full,
}

impl Method {
    /// The method's usual name, for titles and reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Lora => "LoRA",
            Method::Dora => "DoRA",
            Method::Qlora => "QLoRA",
            Method::Full => "full fine-tuning",
        }
    }
}
