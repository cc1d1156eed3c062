-- MSLDM for Ardour 7, headless: generate stems that fit some tracks of a session and put
-- them on new tracks at the range's start.
--
--   ardour7-lua msldm_generate.lua SESSION_DIR SESSION_NAME given=Drums:drums,Keys:piano \
--       generate=bass,guitar [start=SAMPLE end=SAMPLE] [server=tcp://127.0.0.1:5555] [seed=7] \
--       [takes=N] [length=region|bars] [steps=8] [candidates=N] [guidance=W] [out=DIR] [region=NAME] \
--       [bridge="msldm-bridge"] \
--       [python=python3]
--   ardour7-lua msldm_generate.lua SESSION_DIR SESSION_NAME given=Drums:drums \
--       redo="MSLDM bass seed7:bass" redo_start=SAMPLE redo_end=SAMPLE [start=SAMPLE end=SAMPLE] ...
-- (`make=` is the old name of `generate=` and still works.)
--
-- Steps: (1) read the given tracks' regions over the range (default: the session range)
-- and the tempo/meter there; (2) `python -m plugin_bridge.adapters.ardour render` paints
-- them from their source files into given.<stem>.wav (Ardour's export may crash on
-- teardown headless); (3) `msldm-bridge generate` writes one file per stem and take,
-- <region>.seed<seed>.<stem>.wav, and prints their paths; (4) a new track per stem and take,
-- "MSLDM <stem> seed<seed>", is added and the session saved and closed; (5) the headless
-- interpreter cannot import audio, so `... ardour place` adds the files to those tracks by
-- editing the closed session's XML. Every take has its own files and track: a later run
-- over the same range adds to the session, it never overwrites an earlier take.
-- A redo renders the named track (a generated one) with the given ones, asks the bridge to
-- make [redo_start, redo_end) of it again (`--redo STEM --range`), and puts the result on a
-- new track "<track> redo seed<seed>": outside the redone span it is the old take, sample
-- for sample. Exit status 0 on success, 1 otherwise.

local function fail (msg)
	io.stderr:write ("msldm: " .. msg .. "\n")
	os.exit (1)
end

local function shq (s) -- quote one shell word (POSIX sh)
	return "'" .. tostring (s):gsub ("'", "'\\''") .. "'"
end

local function jstr (s) -- a JSON string literal
	local e = tostring (s):gsub ('[%c"\\]', function (c)
		local map = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
		return map[c] or string.format ("\\u%04x", c:byte ())
	end)
	return '"' .. e .. '"'
end

local function run (cmd)
	print ("msldm: $ " .. cmd)
	local ok, how, code = os.execute (cmd)
	if not ok then fail ("command failed (" .. tostring (how) .. " " .. tostring (code) .. "): " .. cmd) end
end

local function file_exists (path)
	local f = io.open (path, "rb")
	if f then f:close () return true end
	return false
end

local function parse_args ()
	if not arg or #arg < 2 then fail ("usage: msldm_generate.lua SESSION_DIR SESSION_NAME given=Track:stem,... generate=stem,...") end
	local o = { dir = arg[1], name = arg[2], bridge = "msldm-bridge", python = "python3",
		server = "tcp://127.0.0.1:5555", prefix = "MSLDM " }
	for i = 3, #arg do
		local k, v = arg[i]:match ("^([%w_]+)=(.*)$")
		if not k then fail ("bad argument " .. arg[i] .. " (want key=value)") end
		o[k] = v
	end
	o.given_list = {}
	for pair in (o.given or ""):gmatch ("[^,]+") do
		local track, stem = pair:match ("^(.*):([%w_]+)$")
		if not track then fail ("given wants Track:stem pairs, got " .. pair) end
		table.insert (o.given_list, { track = track, stem = stem })
	end
	o.generate = o.generate or o.make -- make=: the name before one name per concept
	if o.redo then
		local track, stem = o.redo:match ("^(.*):([%w_]+)$")
		if not track then fail ("redo wants Track:stem, got " .. o.redo) end
		o.redo_track, o.redo_stem = track, stem
		table.insert (o.given_list, { track = track, stem = stem })
		if not tonumber (o.redo_start) or not tonumber (o.redo_end) then
			fail ("redo needs redo_start=SAMPLE and redo_end=SAMPLE")
		end
		o.generate = stem
	end
	if not o.generate or o.generate == "" then fail ("generate=stem,... is required") end
	o.out = o.out or (o.dir .. "/msldm")
	return o
end

local function region_table (r)
	local ar = r:to_audioregion ()
	local srcs = {}
	for c = 0, ar:n_channels () - 1 do
		table.insert (srcs, jstr (r:source (c):to_filesource ():path ()))
	end
	return string.format ('{"position": %d, "length": %d, "start": %d, "layer": %d, "muted": %s, '
		.. '"opaque": %s, "gain": %.9g, "sources": [%s]}', r:position ():samples (), r:length ():samples (),
		r:start ():samples (), r:layer (), tostring (r:muted ()), tostring (r:opaque ()),
		ar:scale_amplitude (), table.concat (srcs, ", "))
end

local function track_json (s, g)
	local route = s:route_by_name (g.track)
	if route:isnil () or route:to_track ():isnil () then fail ("no track named " .. g.track) end
	local regs = {}
	for r in route:to_track ():playlist ():region_list ():iter () do
		if not r:to_audioregion ():isnil () then table.insert (regs, region_table (r)) end
	end
	return string.format ('{"name": %s, "stem": %s, "regions": [%s]}', jstr (g.track), jstr (g.stem),
		table.concat (regs, ", "))
end

local function context_at (start)
	-- Ardour's tempo counts quarter notes a minute; the daemon's counts beats of the meter's
	-- unit (6/8: eighth notes), so it is scaled by note_value / 4
	local tm = Temporal.TempoMap.read ()
	local tp = Temporal.timepos_t (start)
	local m = tm:meter_at (tp)
	return { tempo = tm:quarters_per_minute_at (tp) * m:note_value () / 4, num = m:divisions_per_bar (),
		den = m:note_value (), bar = tm:bbt_at (tp).bars }
end

local function write_plan (s, o, ctx)
	local tracks = {}
	for _, g in ipairs (o.given_list) do table.insert (tracks, track_json (s, g)) end
	local plan = string.format ('{"session_dir": %s, "session_name": %s, "sample_rate": %d, "start": %d, '
		.. '"end": %d, "tempo": %.9g, "meter": [%d, %d], "start_bar": %d, "tracks": [%s]}\n',
		jstr (o.dir), jstr (o.name), s:nominal_sample_rate (), o.start, o["end"], ctx.tempo, ctx.num, ctx.den,
		ctx.bar, table.concat (tracks, ", "))
	os.execute ("mkdir -p " .. shq (o.out))
	local path = o.out .. "/" .. o.region .. ".plan.json"
	local f = io.open (path, "w") or fail ("cannot write " .. path)
	f:write (plan)
	f:close ()
	return path
end

local function bridge_cmd (o, sr, ctx)
	local cmd = o.bridge .. " --server " .. shq (o.server) .. " generate"
	for _, g in ipairs (o.given_list) do
		cmd = cmd .. " --given " .. shq (g.stem .. "=" .. o.out .. "/given." .. g.stem .. ".wav")
	end
	cmd = cmd .. " --generate " .. shq (o.generate) .. " --out " .. shq (o.out) .. " --region " .. shq (o.region)
		.. " --output-sample-rate " .. sr .. " --bit-depth 32f"
		.. string.format (" --tempo %.6g --meter %d/%d --start-bar %d", ctx.tempo, ctx.num, ctx.den, ctx.bar)
	if o.seed then cmd = cmd .. " --seed " .. shq (o.seed) end
	if o.steps then cmd = cmd .. " --steps " .. shq (o.steps) end
	if o.takes then cmd = cmd .. " --takes " .. shq (o.takes) end
	if o.candidates then cmd = cmd .. " --candidates " .. shq (o.candidates) end  -- given bass and drums alone
	if o.guidance then cmd = cmd .. " --guidance " .. shq (o.guidance) end  -- how closely they follow the given stems
	if o.length then cmd = cmd .. " --length " .. shq (o.length) end
	if o.redo then
		cmd = cmd .. string.format (" --redo %s --range %.9g-%.9g", shq (o.redo_stem),
			(tonumber (o.redo_start) - o.start) / sr, (tonumber (o.redo_end) - o.start) / sr)
	end
	return cmd
end

local function run_bridge (cmd)
	-- the bridge prints, take by take, `stem<TAB>path` per file and then `sidecar<TAB>path`
	print ("msldm: $ " .. cmd)
	local p = io.popen (cmd) or fail ("cannot run " .. cmd)
	local takes, take = {}, {}
	for line in p:lines () do
		local key, path = line:match ("^([^\t]+)\t(.*)$")
		if key == "sidecar" then
			table.insert (takes, take)
			take = {}
		elseif key then
			table.insert (take, { stem = key, file = path })
		end
	end
	local ok, how, code = p:close ()
	if not ok then fail ("msldm-bridge failed (" .. tostring (how) .. " " .. tostring (code) .. ")") end
	if #takes == 0 then fail ("msldm-bridge wrote no stems") end
	return takes
end

local function add_tracks (s, o, takes)
	local names = {}
	for _, take in ipairs (takes) do
		for _, f in ipairs (take) do
			local seed = f.file:match ("%.seed(%d+)%.[^./]+%.wav$") or "?"
			local name = o.prefix .. f.stem .. " seed" .. seed
			if o.redo then name = o.redo_track .. " redo seed" .. seed end
			local tl = s:new_audio_track (1, 2, nil, 1, name, ARDOUR.PresentationInfo.max_order,
				ARDOUR.TrackMode.Normal, true)
			if tl:size () ~= 1 then fail ("could not add a track for " .. f.stem) end
			if not file_exists (f.file) then fail ("the bridge did not write " .. f.file) end
			table.insert (names, { track = tl:front ():name (), file = f.file })
		end
	end
	return names
end

-- main ------------------------------------------------------------------------------------
local o = parse_args ()
AudioEngine:set_backend ("None (Dummy)", "", "")
local s = load_session (o.dir, o.name)
if not s then fail ("cannot load session " .. o.name .. " in " .. o.dir) end
o.start = tonumber (o.start) or s:current_start_sample ()
o["end"] = tonumber (o["end"]) or s:current_end_sample ()
if o["end"] <= o.start then fail ("empty range; give start= and end= or set the session range") end
o.region = o.region or ("msldm-" .. o.start)
local sr = s:nominal_sample_rate ()
local ctx = context_at (o.start)
local plan = write_plan (s, o, ctx)
run (o.python .. " -m plugin_bridge.adapters.ardour render " .. shq (plan) .. " " .. shq (o.out))
local placed = add_tracks (s, o, run_bridge (bridge_cmd (o, sr, ctx)))
s:save_state ("", false, false, false, false, false)
close_session ()
local cmd = o.python .. " -m plugin_bridge.adapters.ardour place " .. shq (o.dir) .. " " .. shq (o.name)
	.. " --at " .. o.start
for _, p in ipairs (placed) do cmd = cmd .. " " .. shq (p.track .. "=" .. p.file) end
run (cmd)
print ("msldm: done; new tracks at sample " .. o.start)
