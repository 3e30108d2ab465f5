-- Argo CD health check for coai.dev/CoaiInstance
-- (argocd-cm key resource.customizations.health.coai.dev_CoaiInstance; see gitops/argocd/).
--
--   status not written yet, or observedGeneration < generation  -> Progressing
--   phase Ready                                                  -> Healthy
--   phase Pending / Progressing / Migrating                      -> Progressing
--   phase Degraded                                               -> Degraded
--   phase Maintenance (spec.maintenance.enabled)                 -> Suspended
--   no phase: the conditions (Degraded=True, Ready=True, else Progressing)
--   UpgradePending=True (spec.version asks for an upgrade not done yet), before the phase:
--     with Stalled=True (refused: downgrade, unknown version; or its migration failed) -> Degraded
--     otherwise (a CoaiMigration is, or will be, running)                              -> Progressing
--
-- Lua 5.1 (Argo CD runs gopher-lua): no goto, no integer division, no string.format("%d").

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local function health(o)
  local hs = {}
  local status = o.status
  if status == nil or (status.phase == nil and status.conditions == nil) then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to reconcile the instance"
    return hs
  end

  local generation = o.metadata and o.metadata.generation
  if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
      .. " (status is for " .. tostring(status.observedGeneration) .. ")"
    return hs
  end

  local ready = condition(status, "Ready")
  local degraded = condition(status, "Degraded")
  local phase = status.phase
  local version = status.version or (o.spec and o.spec.version) or "?"
  local upgrade = condition(status, "UpgradePending")
  local stalled = condition(status, "Stalled")

  if upgrade ~= nil and upgrade.status == "True" and phase ~= "Degraded" then
    if stalled ~= nil and stalled.status == "True" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    hs.message = text(upgrade, "An upgrade of CoAI " .. version .. " is pending")
  elseif phase == "Ready" then
    hs.status = "Healthy"
    hs.message = text(ready, "CoAI " .. version .. " is ready")
  elseif phase == "Degraded" then
    hs.status = "Degraded"
    hs.message = text(degraded, text(ready, "CoAI " .. version .. " is degraded"))
  elseif phase == "Maintenance" then
    hs.status = "Suspended"
    hs.message = text(ready, "Maintenance mode is on")
  elseif phase == "Migrating" then
    hs.status = "Progressing"
    if status.activeMigration ~= nil then
      hs.message = "CoaiMigration " .. status.activeMigration .. " is upgrading the instance"
    else
      hs.message = text(ready, "A CoaiMigration is upgrading the instance")
    end
  elseif phase == "Pending" or phase == "Progressing" then
    hs.status = "Progressing"
    hs.message = text(ready, "Rolling out CoAI " .. version)
  elseif phase == nil then
    if degraded ~= nil and degraded.status == "True" then
      hs.status = "Degraded"
      hs.message = text(degraded, "Degraded")
    elseif ready ~= nil and ready.status == "True" then
      hs.status = "Healthy"
      hs.message = text(ready, "Ready")
    else
      hs.status = "Progressing"
      hs.message = text(ready, "Waiting for the instance to become ready")
    end
  else
    hs.status = "Unknown"
    hs.message = "Unknown phase " .. tostring(phase) .. " (is the health check older than the operator?)"
  end
  return hs
end

return health(obj)
