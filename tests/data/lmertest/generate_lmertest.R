# Tightly converged lmerTest / pbkrtest / lme4-profile references for mixedblup's inference tests.
#
# Run from this folder: Rscript generate_lmertest.R
# (Debian packages r-cran-lme4 r-cran-lmertest r-cran-pbkrtest r-cran-jsonlite; made with
# R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2).
#
# Why a second set next to ../lme4: lme4's default optimiser stops about 1e-8 short of the
# optimum of the criterion, which moves theta by up to 1e-4 relative; Satterthwaite's df of a
# strong effect and its tiny p-value (1e-7 .. 1e-18) are sensitive enough to carry that to
# 1e-3 relative in p.  Here every model is refitted with the optimiser run to convergence
# (tolerances 1e-14), so lmerTest's numbers are those at the optimum itself.
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
out <- "."
tight <- lmerControl(optimizer = "nloptwrap", calc.derivs = TRUE,
                     optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-14, xtol_rel = 1e-14,
                                    ftol_rel = 1e-15, maxeval = 1e5))
fitted_models <- list()
ref <- function(name, formula, data, REML = TRUE) {
  fm <- lmerTest::lmer(formula, data = data, REML = REML, control = tight)
  cf <- coef(summary(fm))
  res <- list(name = name, formula = deparse(formula(fm), width.cutoff = 500L), REML = REML,
    theta = unname(getME(fm, "theta")), sigma = sigma(fm),
    criterion = if (REML) REMLcrit(fm) else deviance(fm), loglik = as.numeric(logLik(fm)),
    max_abs_gradient = max(abs(fm@optinfo$derivs$gradient)),
    fixef = list(names = rownames(cf), estimate = unname(cf[, 1]), se = unname(cf[, 2]),
                 t = unname(cf[, "t value"]), df_satterthwaite = unname(cf[, "df"]),
                 p_satterthwaite = unname(cf[, "Pr(>|t|)"])))
  if (REML) {
    kr <- coef(summary(fm, ddf = "Kenward-Roger"))
    res$fixef$se_kenward_roger <- unname(kr[, 2])
    res$fixef$t_kenward_roger <- unname(kr[, "t value"])
    res$fixef$df_kenward_roger <- unname(kr[, "df"])
    res$fixef$p_kenward_roger <- unname(kr[, "Pr(>|t|)"])
  }
  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE), file.path(out, paste0(name, ".json")))
  cat(name, "gradient", res$max_abs_gradient, "\n")
  fm
}
invisible(ref("sleepstudy_slopes_reml", Reaction ~ Days + (Days | Subject), sleepstudy))
ssml <- ref("sleepstudy_slopes_ml", Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
invisible(ref("sleepstudy_uncorr_reml", Reaction ~ Days + (Days || Subject), sleepstudy))
invisible(ref("sleepstudy_intercept_reml", Reaction ~ Days + (1 | Subject), sleepstudy))
invisible(ref("dyestuff_reml", Yield ~ 1 + (1 | Batch), Dyestuff))
invisible(ref("dyestuff_ml", Yield ~ 1 + (1 | Batch), Dyestuff, REML = FALSE))
invisible(ref("penicillin_crossed_reml", diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin))
invisible(ref("pastes_nested_reml", strength ~ 1 + (1 | batch/cask), Pastes))

# Profile-likelihood intervals (lme4's confint(method = "profile"): SDs, correlations, sigma).
# lme4 profiles every fit with the ML deviance (profile.merMod refits a REML fit by ML), so
# these intervals are those of the ML fit, whatever criterion the model was fitted with.
prof_ref <- function(name, fm) {
  ci <- confint(fm, method = "profile", oldNames = FALSE, level = 0.95)
  res <- list(name = name, REML = isREML(fm), level = 0.95, parameter = rownames(ci),
              lower = unname(ci[, 1]), upper = unname(ci[, 2]))
  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
             file.path(out, paste0(name, "_profile_confint.json")))
  print(ci)
}
prof_ref("sleepstudy_slopes_ml", ssml)

# Heritability-type ratio of a one-term model, h2 = s2_b / (s2_b + s2_e) = theta^2 / (1 + theta^2):
# its profile likelihood is lme4's profiled criterion in theta (sigma profiled out), so the
# interval is {theta : devfun(theta) - min <= qchisq(0.95, 1)} mapped to h2.
h2_ref <- function(name, formula, data, REML = TRUE) {
  fm <- lmer(formula, data = data, REML = REML, control = tight)
  dev <- lmer(formula, data = data, REML = REML, devFunOnly = TRUE)
  th <- getME(fm, "theta")
  dmin <- dev(th)
  cut <- qchisq(0.95, 1)
  f <- function(t) dev(t) - dmin - cut
  lo <- if (f(0) > 0) uniroot(f, c(0, th), tol = 1e-12)$root else 0
  up <- th
  while (f(up) < 0) up <- 2 * up
  hi <- uniroot(f, c(th, up), tol = 1e-12)$root
  h2 <- function(t) t^2 / (1 + t^2)
  res <- list(name = name, REML = REML, level = 0.95, estimate = h2(th), lower = h2(lo), upper = h2(hi),
              theta = th, theta_lower = lo, theta_upper = hi)
  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
             file.path(out, paste0(name, "_h2_profile.json")))
  cat(name, "h2 in [", res$lower, ",", res$upper, "]\n")
}
h2_ref("dyestuff_reml", Yield ~ 1 + (1 | Batch), Dyestuff)
h2_ref("sleepstudy_intercept_reml", Reaction ~ Days + (1 | Subject), sleepstudy)
