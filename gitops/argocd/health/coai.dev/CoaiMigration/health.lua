-- Argo CD health check for coai.dev/CoaiMigration
-- (argocd-cm key resource.customizations.health.coai.dev_CoaiMigration; see gitops/argocd/).
--
--   status not written yet, or observedGeneration < generation      -> Progressing
--   Pending / Planning / BackingUp / Migrating / Validating /
--   RollingBack                                                     -> Progressing
--   Succeeded (also a dry run)                                      -> Healthy
--   RolledBack after spec.rollback.requested: true                  -> Healthy (what was asked for)
--   RolledBack on its own (policy Automatic after a failure)        -> Degraded: the upgrade Git
--                                                                      declares did not happen
--   Failed (any policy; Manual waits for rollback.requested)       -> Degraded: the instance may be
--                                                                      down in maintenance; a person
--                                                                      must act, so alert, not pause
--
-- Lua 5.1 (Argo CD runs gopher-lua).

local progressing = {
  Pending = "Waiting for the instance lock",
  Planning = "Planning the upgrade",
  BackingUp = "Backing up",
  Migrating = "Migrating",
  Validating = "Validating",
  RollingBack = "Rolling back",
}

local function describe(status, fallback)
  local parts = fallback
  if status.currentStep ~= nil and status.currentStep ~= "" then
    parts = parts .. " (step " .. status.currentStep .. ")"
  end
  if status.message ~= nil and status.message ~= "" then
    parts = parts .. ": " .. status.message
  end
  return parts
end

local function health(o)
  local hs = {}
  local status = o.status
  local spec = o.spec or {}
  local rollback = spec.rollback or {}
  if status == nil or status.phase == nil then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to start the migration"
    return hs
  end

  local generation = o.metadata and o.metadata.generation
  if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
      .. " (status is for " .. tostring(status.observedGeneration) .. ")"
    return hs
  end

  local phase = status.phase
  local from = status.fromVersion or "?"
  local to = status.toVersion or spec.targetVersion or "?"

  if progressing[phase] ~= nil then
    hs.status = "Progressing"
    hs.message = describe(status, progressing[phase])
  elseif phase == "Succeeded" then
    hs.status = "Healthy"
    if spec.dryRun == true then
      hs.message = describe(status, "Dry run: planned the upgrade from " .. from .. " to " .. to)
    else
      hs.message = describe(status, "Upgraded from " .. from .. " to " .. to)
    end
  elseif phase == "RolledBack" then
    if rollback.requested == true then
      hs.status = "Healthy"
      hs.message = describe(status, "Rolled back to " .. from .. " as requested")
    else
      hs.status = "Degraded"
      hs.message = describe(status, "The upgrade to " .. to .. " failed and was rolled back to " .. from)
    end
  elseif phase == "Failed" then
    hs.status = "Degraded"
    local hint = ""
    local said = status.message ~= nil and string.find(status.message, "rollback.requested", 1, true) ~= nil
    if rollback.policy == "Manual" and rollback.requested ~= true and not said then
      hint = "; set spec.rollback.requested: true to roll back"
    end
    hs.message = describe(status, "The upgrade to " .. to .. " failed") .. hint
  else
    hs.status = "Unknown"
    hs.message = "Unknown phase " .. tostring(phase) .. " (is the health check older than the operator?)"
  end
  return hs
end

return health(obj)
