// The JavaScript a mongod gives server-side functions (the part mapReduce
// uses), and the conversions between canonical Extended JSON and values.
"use strict";

function ObjectId(hex) {
  if (!(this instanceof ObjectId)) return new ObjectId(hex);
  this.str = String(hex);
}
ObjectId.prototype.toString = function () { return 'ObjectId("' + this.str + '")'; };
ObjectId.prototype.toHexString = function () { return this.str; };
ObjectId.prototype.valueOf = function () { return this.str; };
ObjectId.prototype.equals = function (o) { return o instanceof ObjectId && o.str === this.str; };
ObjectId.prototype.getTimestamp = function () { return new Date(parseInt(this.str.substr(0, 8), 16) * 1000); };

function NumberLong(v) {
  if (!(this instanceof NumberLong)) return new NumberLong(v);
  this.__s = String(v instanceof NumberLong ? v.__s : (typeof v === "number" ? Math.trunc(v) : v));
  this.floatApprox = Number(this.__s);
}
NumberLong.prototype.valueOf = function () { return Number(this.__s); };
NumberLong.prototype.toNumber = function () { return Number(this.__s); };
NumberLong.prototype.toString = function () { return "NumberLong(" + this.__s + ")"; };

function NumberInt(v) {
  if (!(this instanceof NumberInt)) return new NumberInt(v);
  this.__n = Number(v) | 0;
}
NumberInt.prototype.valueOf = function () { return this.__n; };
NumberInt.prototype.toNumber = function () { return this.__n; };
NumberInt.prototype.toString = function () { return "NumberInt(" + this.__n + ")"; };

function NumberDecimal(v) {
  if (!(this instanceof NumberDecimal)) return new NumberDecimal(v);
  this.__s = String(v);
}
NumberDecimal.prototype.valueOf = function () { return Number(this.__s); };
NumberDecimal.prototype.toString = function () { return 'NumberDecimal("' + this.__s + '")'; };

function Timestamp(t, i) {
  if (!(this instanceof Timestamp)) return new Timestamp(t, i);
  this.t = t; this.i = i;
}
Timestamp.prototype.toString = function () { return "Timestamp(" + this.t + ", " + this.i + ")"; };

function BinData(subtype, base64) {
  if (!(this instanceof BinData)) return new BinData(subtype, base64);
  this.subtype = subtype; this.base64 = base64;
}
BinData.prototype.toString = function () { return 'BinData(' + this.subtype + ',"' + this.base64 + '")'; };

function BSONRegExp(pattern, options) { this.pattern = pattern; this.options = options; }
function MinKey() {}
function MaxKey() {}

Array.sum = function (a) { var s = 0; for (var i = 0; i < a.length; i++) s += a[i]; return s; };
Array.avg = function (a) { return a.length ? Array.sum(a) / a.length : undefined; };
Array.contains = function (a, x) { return a.indexOf(x) >= 0; };
Array.unique = function (a) { var o = []; for (var i = 0; i < a.length; i++) if (o.indexOf(a[i]) < 0) o.push(a[i]); return o; };
function isNumber(x) { return typeof x === "number"; }
function isString(x) { return typeof x === "string"; }
function isObject(x) { return typeof x === "object" && x !== null; }
function tojson(x) { return JSON.stringify(x, __tag); }
function print() {}
function printjson() {}

// Extended JSON (canonical) to values.
function __revive(key, v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
  var keys = Object.keys(v);
  if (keys.length === 0 || keys[0].charAt(0) !== "$") return v;
  var k = keys[0];
  switch (k) {
    case "$numberInt": return Number(v.$numberInt);
    case "$numberDouble": return Number(v.$numberDouble);
    case "$numberLong": return new NumberLong(v.$numberLong);
    case "$numberDecimal": return new NumberDecimal(v.$numberDecimal);
    case "$oid": return new ObjectId(v.$oid);
    case "$date": {
      var d = v.$date;
      return new Date(d instanceof NumberLong ? Number(d.__s) : Number(d));
    }
    case "$timestamp": return new Timestamp(v.$timestamp.t, v.$timestamp.i);
    case "$binary": return new BinData(parseInt(v.$binary.subType, 16), v.$binary.base64);
    case "$regularExpression": return new BSONRegExp(v.$regularExpression.pattern, v.$regularExpression.options);
    case "$minKey": return new MinKey();
    case "$maxKey": return new MaxKey();
    case "$undefined": return undefined;
    case "$symbol": return v.$symbol;
    case "$code": return v.$code;
    default: return v;
  }
}

// Values to Extended JSON (canonical): `this[key]` is the value before
// `toJSON` (a Date's would be a string already).
function __Tag() {}
function __t(o) { Object.setPrototypeOf(o, __Tag.prototype); return o; }
function __double(n) {
  if (n !== n) return "NaN";
  if (n === Infinity) return "Infinity";
  if (n === -Infinity) return "-Infinity";
  if (n === 0 && 1 / n < 0) return "-0.0";
  return String(n);
}
function __tag(key, value) {
  if (this instanceof __Tag) return value;
  var v = this[key];
  if (v === undefined) return __t({ $undefined: true });
  if (v === null) return null;
  if (typeof v === "number") return __t({ $numberDouble: __double(v) });
  if (typeof v === "function") return __t({ $code: String(v) });
  if (typeof v !== "object") return value;
  if (v instanceof Date) return __t({ $date: __t({ $numberLong: String(v.getTime()) }) });
  if (v instanceof ObjectId) return __t({ $oid: v.str });
  if (v instanceof NumberLong) return __t({ $numberLong: v.__s });
  if (v instanceof NumberInt) return __t({ $numberInt: String(v.__n) });
  if (v instanceof NumberDecimal) return __t({ $numberDecimal: v.__s });
  if (v instanceof Timestamp) return __t({ $timestamp: __t({ t: v.t, i: v.i }) });
  if (v instanceof BinData) {
    var st = v.subtype.toString(16);
    return __t({ $binary: __t({ base64: v.base64, subType: st.length < 2 ? "0" + st : st }) });
  }
  if (v instanceof BSONRegExp) return __t({ $regularExpression: __t({ pattern: v.pattern, options: v.options }) });
  if (v instanceof RegExp) {
    var f = v.flags.split("").filter(function (c) { return "imsux".indexOf(c) >= 0; }).sort().join("");
    return __t({ $regularExpression: __t({ pattern: v.source, options: f }) });
  }
  if (v instanceof MinKey) return __t({ $minKey: 1 });
  if (v instanceof MaxKey) return __t({ $maxKey: 1 });
  return value;
}

function __compile(source) {
  var f = (0, eval)("(" + source + ")");
  if (typeof f !== "function") throw new TypeError("not a function: " + source);
  return f;
}

function __setScope(text) {
  var scope = JSON.parse(text, __revive);
  for (var name in scope) globalThis[name] = scope[name];
  return "null";
}

var __emits = [];
function emit(k, v) {
  if (arguments.length !== 2) throw new Error("emit takes 2 args");
  __emits.push([k === undefined ? null : k, v]);
}

// A batch of documents through map: the [key, value] pairs emitted.
function __mapDocuments(text) {
  var docs = JSON.parse(text, __revive);
  __emits = [];
  for (var i = 0; i < docs.length; i++) __map.call(docs[i]);
  var out = __emits;
  __emits = [];
  return JSON.stringify(out, __tag);
}

// [[key, [values]], …] through reduce: one value per group.
function __reduceGroups(text) {
  var groups = JSON.parse(text, __revive);
  return JSON.stringify(groups.map(function (g) { return __reduce(g[0], g[1]); }), __tag);
}

// [[key, value], …] through finalize.
function __finalizeGroups(text) {
  var groups = JSON.parse(text, __revive);
  return JSON.stringify(groups.map(function (g) { return __finalize(g[0], g[1]); }), __tag);
}
