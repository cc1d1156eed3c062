ardour {
	["type"]    = "EditorAction",
	name        = "MSLDM: generate accompaniment",
	license     = "MIT",
	description = [[Generate accompaniment stems (bass, drums, guitar, piano) that fit the
selected tracks over the selected time range, with a running MSLDM daemon (`msldm serve`),
and import them as new tracks at the range start. Track names tell the instrument
(drum/kit/perc -> drums, bass, guitar/gtr, piano/keys/rhodes/organ/synth -> piano).
Select a generated track (named msldm...) too, and the time range is redone on it: a new
track with that span made again, the rest of the take kept sample for sample.]]
}

-- Not exercised by CI (it needs Ardour's GUI); the headless msldm_generate.lua shares its
-- steps and is. Same helpers: `python -m plugin_bridge.adapters.ardour render` paints the
-- selected tracks from their source files, `msldm-bridge generate` makes the stems, and the
-- editor's own import (available in the GUI) adds them as tracks.

function action_params ()
	return {
		["server"] = { title = "Daemon address", default = "tcp://127.0.0.1:5555" },
		["bridge"] = { title = "msldm-bridge command", default = "msldm-bridge" },
		["python"] = { title = "Python with msldm installed", default = "python3" },
		["generate"] = { title = "Stems to generate (comma separated; empty: all not selected)", default = "" },
		["takes"] = { title = "Takes (1-8; each its own track, named by seed)", default = "1" },
		["length"] = { title = "Length: region, or bars (end on a bar line)", default = "region" },
		["candidates"] = { title = "Candidates given bass and drums alone (1: faster; empty: the model's)", default = "" },
		["guidance"] = { title = "Follow the given stems' timing (1: the model's pull, 2-3: tighter; empty: the model's)", default = "" },
	}
end

function factory (params) return function ()
	local p = params or {}
	local server, bridge, python = p["server"] or "tcp://127.0.0.1:5555", p["bridge"] or "msldm-bridge", p["python"] or "python3"
	local words = { drums = { "drum", "kit", "perc", "kick", "snare" }, bass = { "bass" },
		guitar = { "guitar", "gtr" }, piano = { "piano", "keys", "rhodes", "organ", "synth" } }

	local function shq (s) return "'" .. tostring (s):gsub ("'", "'\\''") .. "'" end
	local function jstr (s)
		return '"' .. tostring (s):gsub ('[%c"\\]', function (c) return string.format ("\\u%04x", c:byte ()) end) .. '"'
	end
	local function alert (msg) LuaDialog.Message ("MSLDM", msg, LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run () end
	local function stem_of (name)
		local low = name:lower ()
		for stem, ws in pairs (words) do
			for _, w in ipairs (ws) do if low:find (w, 1, true) then return stem end end
		end
		return nil
	end

	local sel = Editor:get_selection ()
	local start, stop = sel.time:start_sample (), sel.time:end_sample ()
	if stop <= start then alert ("Select a time range first.") return end

	-- Redo: when one selected track is a generated one (its name starts with "msldm"), the
	-- time selection is the span of it to make again; the region rendered is that track's
	-- region under the selection, and the other selected tracks are the given ones.
	local redo = nil
	for r in sel.tracks:routelist ():iter () do
		if not r:to_track ():isnil () and r:name ():lower ():find ("^msldm") then
			if redo then alert ("Select one generated (MSLDM) track to redo, with the tracks it goes with.") return end
			local stem = stem_of (r:name ())
			if not stem then alert ("Track '" .. r:name () .. "': cannot tell its instrument from its name.") return end
			for reg in r:to_track ():playlist ():region_list ():iter () do
				local a = reg:position ():samples ()
				local b = a + reg:length ():samples ()
				if a <= start and stop <= b then redo = { stem = stem, start = a, stop = b } end
			end
			if not redo then alert ("The time selection must lie inside one region of '" .. r:name () .. "'.") return end
		end
	end
	local span_start, span_stop = start, stop
	if redo then start, stop = redo.start, redo.stop end

	local tracks, given, used = {}, {}, {}
	for r in sel.tracks:routelist ():iter () do
		local t = r:to_track ()
		if not t:isnil () then
			local stem = stem_of (r:name ())
			if not stem then alert ("Track '" .. r:name () .. "': cannot tell its instrument from its name.") return end
			if used[stem] then alert ("Two selected tracks are " .. stem .. "; select one per instrument.") return end
			used[stem] = true
			local regs = {}
			for reg in t:playlist ():region_list ():iter () do
				local ar = reg:to_audioregion ()
				if not ar:isnil () then
					local srcs = {}
					for c = 0, ar:n_channels () - 1 do table.insert (srcs, jstr (reg:source (c):to_filesource ():path ())) end
					table.insert (regs, string.format ('{"position": %d, "length": %d, "start": %d, "layer": %d, '
						.. '"muted": %s, "opaque": %s, "gain": %.9g, "sources": [%s]}', reg:position ():samples (),
						reg:length ():samples (), reg:start ():samples (), reg:layer (), tostring (reg:muted ()),
						tostring (reg:opaque ()), ar:scale_amplitude (), table.concat (srcs, ", ")))
				end
			end
			table.insert (tracks, string.format ('{"name": %s, "stem": %s, "regions": [%s]}', jstr (r:name ()),
				jstr (stem), table.concat (regs, ", ")))
			table.insert (given, stem)
		end
	end
	if #tracks == 0 then alert ("Select the tracks to accompany first.") return end

	local generate = p["generate"] or p["make"] or "" -- "make": its name in earlier versions
	if redo then generate = redo.stem end
	if generate == "" then
		local missing = {}
		for _, s in ipairs ({ "bass", "drums", "guitar", "piano" }) do if not used[s] then table.insert (missing, s) end end
		generate = table.concat (missing, ",")
	end

	local sr = Session:nominal_sample_rate ()
	local tm = Temporal.TempoMap.read ()
	local tp = Temporal.timepos_t (start)
	local meter = tm:meter_at (tp)
	local out = Session:path () .. "/msldm"
	local region = "msldm-" .. start
	os.execute ("mkdir -p " .. shq (out))
	local plan_path = out .. "/" .. region .. ".plan.json"
	local f = io.open (plan_path, "w")
	f:write (string.format ('{"sample_rate": %d, "start": %d, "end": %d, "tracks": [%s]}\n', sr, start, stop,
		table.concat (tracks, ", ")))
	f:close ()

	if not os.execute (python .. " -m plugin_bridge.adapters.ardour render " .. shq (plan_path) .. " " .. shq (out)) then
		alert ("Rendering the selected tracks failed (is msldm installed for " .. python .. "?)") return
	end
	local cmd = bridge .. " --server " .. shq (server) .. " generate"
	for _, s in ipairs (given) do cmd = cmd .. " --given " .. shq (s .. "=" .. out .. "/given." .. s .. ".wav") end
	cmd = cmd .. " --generate " .. shq (generate) .. " --out " .. shq (out) .. " --region " .. shq (region)
		.. " --output-sample-rate " .. sr .. " --bit-depth 32f --quiet"
		-- the daemon's tempo counts beats of the meter's unit; Ardour's, quarter notes
		.. string.format (" --tempo %.6g --meter %d/%d --start-bar %d",
			tm:quarters_per_minute_at (tp) * meter:note_value () / 4,
			meter:divisions_per_bar (), meter:note_value (), tm:bbt_at (tp).bars)
		.. " --takes " .. shq (p["takes"] or "1")
	if p["candidates"] and p["candidates"] ~= "" then cmd = cmd .. " --candidates " .. shq (p["candidates"]) end
	if p["guidance"] and p["guidance"] ~= "" then cmd = cmd .. " --guidance " .. shq (p["guidance"]) end
	if redo then
		cmd = cmd .. string.format (" --redo %s --range %.9g-%.9g", shq (redo.stem), (span_start - start) / sr,
			(span_stop - start) / sr)
	else
		cmd = cmd .. " --length " .. shq (p["length"] or "region")
	end
	local log = out .. "/" .. region .. ".log"
	if not os.execute (cmd .. " > " .. shq (log) .. " 2>&1") then
		local lf = io.open (log, "r")
		alert ("msldm-bridge failed:\n" .. (lf and lf:read ("a") or cmd)) return
	end

	-- the log holds the bridge's `stem<TAB>path` lines: one file per stem and take, named by
	-- region and seed (<region>.seed<seed>.<stem>.wav), so no take overwrites an earlier one
	local files, lf = C.StringVector (), io.open (log, "r")
	for line in (lf and lf:read ("a") or ""):gmatch ("[^\n]+") do
		local key, path = line:match ("^([%w_]+)\t(.+%.wav)$")
		if key then
			local chk = io.open (path, "rb")
			if not chk then alert ("msldm-bridge did not write " .. path) return end
			chk:close ()
			files:push_back (path)
		end
	end
	if lf then lf:close () end
	if files:size () == 0 then alert ("msldm-bridge wrote no stems (see " .. log .. ")") return end
	Editor:do_import (files, Editing.ImportDistinctFiles, Editing.ImportAsTrack, ARDOUR.SrcQuality.SrcBest,
		ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
		Temporal.timepos_t (start), ARDOUR.PluginInfo (), ARDOUR.Track (), false)
end end
