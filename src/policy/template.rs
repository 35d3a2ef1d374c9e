//! `poisongate policy --init`: the defaults as a commented TOML template.

use super::Policy;

/// The default policy as TOML with a comment above every section.
///
/// # Errors
/// Serialisation failure (a bug).
pub fn template() -> crate::Result<String> {
    let body = toml::to_string(&Policy::default())
        .map_err(|e| crate::Error::Internal(format!("policy template: {e}")))?;
    let mut out = String::from(
        "# poisongate policy. Every key is optional; omitted keys keep these defaults.\n\
         # Unknown keys are an error. Levels: deny (may block), warn (report only), allow (drop).\n\
         # A finding denies only when its effect size passes the deny threshold AND the statistic\n\
         # is beyond what clean batches of the same size produce (Holm-adjusted p < gate.alpha and\n\
         # above the gate.null-level quantile of simulated clean batches).\n",
    );
    for line in body.lines() {
        if line.starts_with("exceptions") {
            continue;
        }
        if let Some(info) = line
            .strip_prefix("[checks.")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(crate::codes::lookup)
        {
            out.push_str(&format!("# {}\n", info.summary));
        }
        if line == "[compare]" {
            out.push_str("# noise-scale: with `compare --noise`, thresholds become the pinned clean-retrain value\n");
            out.push_str("# plus noise-scale x the threshold. min-segment-rows: smaller segments are not tested.\n");
        }
        if line == "[gate]" {
            out.push_str(
                "# alpha: family-wise error rate over every test of one batch (Holm 1979).\n",
            );
            out.push_str("# null-draws / null-level: simulated clean batches per column, and the quantile an\n");
            out.push_str("# effect statistic must exceed (parametric bootstrap from the pinned bin counts).\n");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(
        "\n# Waive a code for one column (or all columns when `column` is omitted). A reason is\n\
         # required and is copied into every report.\n\
         # [[exceptions]]\n\
         # code = \"drift-numeric\"\n\
         # column = \"age\"\n\
         # reason = \"age distribution shifts every January; tracked in TICKET-123\"\n\
         \n# Hard domains: what a column may hold by definition. Any value outside is\n\
         # schema-out-of-domain (deny), however few. Numeric: min and/or max; categorical:\n\
         # categories (a null is never outside a domain; schema-null-rate covers nulls).\n\
         # [domains.age]\n\
         # min = 0\n\
         # max = 120\n\
         # [domains.country]\n\
         # categories = [\"DE\", \"FR\", \"NL\"]\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn template_parses_back_to_the_defaults() {
        let text = super::template().unwrap();
        let parsed: super::Policy = toml::from_str(&text).unwrap();
        assert_eq!(parsed, super::Policy::default());
        assert!(text.contains("# A numeric column's distribution moved"));
    }
}
