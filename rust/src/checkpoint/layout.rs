//! Recognising checkpoint layouts (full CLIPModel, CLIPVisionModel with or without the `vision_model.`
//! prefix) and matching tensor names across them.

use std::borrow::Cow;

/// The prefix of the vision tower's tensors in CLIPModel and transformers-4 CLIPVisionModel files.
pub(crate) const VISION_PREFIX: &str = "vision_model.";

/// A layout recognised from tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A full CLIPModel: text and vision towers, projections, `logit_scale`.
    ClipModel,
    /// CLIPVisionModel as transformers 4.x saves it (`vision_model.*`), the hub's fine-tuned layout.
    ClipVisionPrefixed,
    /// CLIPVisionModel as transformers 5 saves it (no `vision_model.` prefix).
    ClipVisionBare,
    /// Anything else: names are matched as they are.
    Generic,
}

impl Layout {
    /// Recognise the layout of a set of tensor names.
    pub(crate) fn detect<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Layout {
        let has = |p: &str| names.clone().any(|n| n.starts_with(p));
        if has("text_model.") && has(VISION_PREFIX) {
            Layout::ClipModel
        } else if names.clone().all(|n| n.starts_with(VISION_PREFIX)) && has("vision_model.embeddings.") {
            Layout::ClipVisionPrefixed
        } else if has("embeddings.patch_embedding.") && has("encoder.layers.") {
            Layout::ClipVisionBare
        } else {
            Layout::Generic
        }
    }

    /// A short description for `merge-rs info`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Layout::ClipModel => "CLIPModel (text + vision towers)",
            Layout::ClipVisionPrefixed => "CLIPVisionModel (vision_model.* keys, transformers 4)",
            Layout::ClipVisionBare => "CLIPVisionModel (unprefixed keys, transformers 5)",
            Layout::Generic => "generic (names matched as they are)",
        }
    }

    /// Machine-readable name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Layout::ClipModel => "clip",
            Layout::ClipVisionPrefixed => "clip_vision",
            Layout::ClipVisionBare => "clip_vision_unprefixed",
            Layout::Generic => "generic",
        }
    }
}

/// How names of the reference layout translate into another checkpoint's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMap {
    /// The same names.
    Identity,
    /// The other checkpoint adds `vision_model.`.
    AddVisionPrefix,
    /// The other checkpoint lacks `vision_model.`.
    StripVisionPrefix,
}

impl KeyMap {
    /// All translations tried, most specific last.
    pub const ALL: [KeyMap; 3] = [KeyMap::Identity, KeyMap::AddVisionPrefix, KeyMap::StripVisionPrefix];

    /// The other checkpoint's name for the reference name `key`, if this translation applies.
    pub(crate) fn apply(self, key: &str) -> Option<Cow<'_, str>> {
        match self {
            KeyMap::Identity => Some(Cow::Borrowed(key)),
            KeyMap::AddVisionPrefix => Some(Cow::Owned(format!("{VISION_PREFIX}{key}"))),
            KeyMap::StripVisionPrefix => key.strip_prefix(VISION_PREFIX).map(Cow::Borrowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_layouts() {
        let clip = ["text_model.x", "vision_model.embeddings.y", "logit_scale"];
        assert_eq!(Layout::detect(clip.iter().copied()), Layout::ClipModel);
        let v4 = ["vision_model.embeddings.a", "vision_model.encoder.layers.0.b"];
        assert_eq!(Layout::detect(v4.iter().copied()), Layout::ClipVisionPrefixed);
        let v5 = ["embeddings.patch_embedding.weight", "encoder.layers.0.mlp.fc1.weight"];
        assert_eq!(Layout::detect(v5.iter().copied()), Layout::ClipVisionBare);
        assert_eq!(Layout::detect(["model.layers.0.w"].iter().copied()), Layout::Generic);
    }

    #[test]
    fn key_maps_translate() {
        assert_eq!(
            KeyMap::AddVisionPrefix.apply("a.b").as_deref(),
            Some("vision_model.a.b")
        );
        assert_eq!(KeyMap::StripVisionPrefix.apply("vision_model.a").as_deref(), Some("a"));
        assert_eq!(KeyMap::StripVisionPrefix.apply("a"), None);
    }
}
