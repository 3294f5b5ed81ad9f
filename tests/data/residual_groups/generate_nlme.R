# Reference values for tests/test_residual_groups.py: nlme's lme with varIdent
# (one residual variance per class of g), REML and ML; and with precision weights
# (varComb(varIdent(~1|g), varFixed(~invw)), var(e_i) = sigma_g^2 / w_i).
# Run from this directory: Rscript generate_nlme.R   (nlme 3.1-162 here)
library(nlme)
d <- read.csv("data.csv", stringsAsFactors = TRUE)
d$invw <- 1 / d$w
ctrl <- lmeControl(opt = "optim", msMaxIter = 500, msTol = 1e-14, tolerance = 1e-12, niterEM = 0)
one <- function(method, weighted) {
  wts <- if (weighted) varComb(varIdent(form = ~ 1 | g), varFixed(~ invw)) else varIdent(form = ~ 1 | g)
  m <- lme(y ~ x, random = ~ 1 | a, data = d, weights = wts, method = method, control = ctrl)
  vs <- if (weighted) m$modelStruct$varStruct[[1]] else m$modelStruct$varStruct
  ratio <- coef(vs, unconstrained = FALSE, allCoef = TRUE)  # sigma_g / sigma_ref
  resid <- (m$sigma * ratio)^2
  list(method = method, weighted = weighted,
       residual = as.list(resid),
       a = as.numeric(getVarCov(m)[1, 1]),
       fixed = as.list(fixef(m)),
       fixed_se = as.list(sqrt(diag(vcov(m)))),
       logLik = as.numeric(logLik(m)),
       nlme = as.character(packageVersion("nlme")))
}
out <- list(reml = one("REML", FALSE), ml = one("ML", FALSE),
            reml_weighted = one("REML", TRUE))
writeLines(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "nlme_reference.json")
